"""Copies one of etcd's .proto files without its Go-only options.

Debian's golang-etcd-server-dev ships etcd's v3 API (.proto files under
/usr/share/gocode/src/go.etcd.io/etcd). They import gogoproto and
google/api/annotations for Go code generation and the JSON gateway; the
C++ client needs neither, so those imports and options are dropped. The
messages, fields and services are left exactly as etcd defines them.

Usage: strip_options.py IN.proto OUT.proto
"""
import re
import sys

text = open(sys.argv[1]).read()
text = re.sub(r'import "(gogoproto/gogo|google/api/annotations)\.proto";\n', '', text)
text = re.sub(r'option \(gogoproto\.[^;]*;\n', '', text)
text = re.sub(r'\s*\[\(gogoproto\.[^\]]*\]', '', text)
text = re.sub(r'option \(google\.api\.http\) = \{.*?\};', '', text, flags=re.S)
if 'gogoproto' in text or 'google.api' in text:
    sys.exit('strip_options.py: %s still mentions an option it should drop' % sys.argv[1])
open(sys.argv[2], 'w').write(text)
