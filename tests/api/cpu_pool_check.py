"""Checks cpu_pool_test.sh's output: the guest's CPUID is exactly this
host's profile under the pool's template, and holds nothing the other
profile lacks; the script's own ok/FAIL lines are counted too.

Usage: cpu_pool_check.py OUTPUT OTHER_PROFILE
"""
import json
import re
import sys

# Bits the guest OS, KVM or the VMM sets at run time, not the template:
# leaf 1 EBX (APIC ID, counts), OSXSAVE, hypervisor, APIC and HTT, OSPKE,
# leaf 0xD.0 EBX (the size for the XCR0 the guest set).
DYNAMIC = {(1, 'ebx'): 0xffffffff, (1, 'ecx'): 1 << 27 | 1 << 31,
           (1, 'edx'): 1 << 9 | 1 << 28, (7, 'ecx'): 1 << 4, (0xd, 'ebx'): 0xffffffff}
# Registers holding feature bits: the guest may see only what both have.
FEATURES = [(1, 'ecx'), (1, 'edx'), (7, 'ebx'), (7, 'ecx'), (7, 'edx'),
            (0x80000001, 'ecx')]
REGS = ['eax', 'ebx', 'ecx', 'edx']


def table(profile):
    t = {}
    for e in profile['cpuid']:
        sub = e.get('subleaf', 0) if e.get('subleafSignificant') else 0
        t[(e.get('leaf', 0), sub)] = {r: e.get(r, 0) for r in REGS}
    return t


def apply_template(t, tmpl):
    """Firecracker's bitmaps, applied independently of kindling's C++."""
    for m in tmpl['cpuid_modifiers']:
        key = (int(m['leaf'], 16), int(m['subleaf'], 16) if m['flags'] & 1 else 0)
        if key not in t:
            continue
        for mod in m['modifiers']:
            bits = mod['bitmap'][2:].rjust(32, 'x')
            v = t[key][mod['register']]
            for i, c in enumerate(reversed(bits)):
                if c == '0':
                    v &= ~(1 << i)
                elif c == '1':
                    v |= 1 << i
            t[key][mod['register']] = v


def section(text, name):
    m = re.search(r'^=== %s\n(.*?)^=== ' % re.escape(name), text, re.S | re.M)
    if not m:
        raise SystemExit('FAIL no "%s" section in the output' % name)
    return m.group(1)


def main():
    text = open(sys.argv[1]).read()
    print(text)
    other = table(json.load(open(sys.argv[2])))
    host = table(json.loads(section(text, 'host.json')))
    expected = dict((k, dict(v)) for k, v in host.items())
    apply_template(expected, json.loads(section(text, 'pool.json')))
    failures = len(re.findall(r'^FAIL ', text, re.M))
    seen = re.findall(r'^cpuid ([0-9a-f]+)\.([0-9a-f]+): eax=(\w+) ebx=(\w+) ecx=(\w+) edx=(\w+)',
                      section(text, 'guest'), re.M)
    if len(seen) < 6:
        print('FAIL the guest printed %d CPUID leaves' % len(seen))
        failures += 1
    for leaf, sub, *vals in seen:
        key = (int(leaf, 16), int(sub, 16))
        for reg, val in zip(REGS, vals):
            got, mask = int(val, 16), ~DYNAMIC.get((key[0], reg), 0)
            want = expected.get(key, {}).get(reg, 0)
            ok = got & mask == want & mask
            if (key[0], reg) in FEATURES:
                extra = got & mask & ~(host.get(key, {}).get(reg, 0) & other.get(key, {}).get(reg, 0))
                ok = ok and extra == 0
            print('%s guest leaf 0x%x.%d %s=%08x, the baseline says %08x' %
                  ('ok  ' if ok else 'FAIL', key[0], key[1], reg, got & mask, want & mask))
            failures += not ok
    print('cpu_pool_check: %d failure(s)' % failures)
    sys.exit(1 if failures else 0)


main()
