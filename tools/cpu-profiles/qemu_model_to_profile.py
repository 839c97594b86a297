#!/usr/bin/env python3
"""Turn one of QEMU's built-in x86 CPU models into a kindling CPU profile.

A kindling CPU profile (kindling.vcpu.v1.CpuProfile, see
libs/vcpu/proto/vcpu/cpu_profile.proto) records what KVM_GET_SUPPORTED_CPUID
and the feature MSRs report on a host. Test data for real processor
generations is derived here from the facts in QEMU's CPU model table
(target/i386/cpu.c, builtin_x86_defs[]) and the bit values of its feature
macros (target/i386/cpu.h). Only those tables are read; nothing of QEMU is
built or run.

Usage:
    qemu_model_to_profile.py CPU_C CPU_H MODEL [VERSION] [options]

    CPU_C, CPU_H  target/i386/cpu.c and target/i386/cpu.h of a QEMU tree,
                  extracted to files (e.g. `git show REV:target/i386/cpu.c`).
    MODEL         the model's .name, e.g. "Skylake-Server".
    VERSION       the model version (default 1); the .props of versions
                  2..VERSION are applied on top of the table entry, in order,
                  as QEMU does.

The profile is written as protobuf's proto3 JSON mapping (lowerCamelCase
names, uint64 as decimal strings, zero/false fields left out) to stdout or
to --output.

What is taken from QEMU's table, and what is assumed, is listed in
tools/cpu-profiles/README.md; the assumptions are also named in the
profile's `source` field.
"""

import argparse
import json
import re
import sys

FORMAT_VERSION = 1

# KVM's paravirtual feature leaf 0x40000001 EAX. QEMU's model table does not
# carry it; this value is assumed and is the same for every profile:
# CLOCKSOURCE(0), NOP_IO_DELAY(1), CLOCKSOURCE2(3), ASYNC_PF(4),
# STEAL_TIME(5), PV_EOI(6), PV_UNHALT(7), PV_TLB_FLUSH(9), PV_SEND_IPI(11),
# POLL_CONTROL(12), PV_SCHED_YIELD(13), ASYNC_PF_INT(14),
# CLOCKSOURCE_STABLE_BIT(24).
KVM_PV_FEATURES_EAX = 0x01007AFB
KVM_SIGNATURE = (0x4B4D564B, 0x564B4D56, 0x0000004D)  # "KVMKVMKVM\0\0\0"

# Leaf 0 EBX, EDX, ECX for each vendor string.
VENDOR_REGS = {
    "GenuineIntel": (0x756E6547, 0x49656E69, 0x6C65746E),
    "AuthenticAMD": (0x68747541, 0x69746E65, 0x444D4163),
}

HYPERVISOR_BIT = 1 << 31  # leaf 1 ECX
OSXSAVE_BIT = 1 << 27  # leaf 1 ECX, OS-controlled: never reported
INVARIANT_TSC_BIT = 1 << 8  # leaf 0x80000007 EDX
ARAT_BIT = 1 << 2  # leaf 6 EAX
MSR_IA32_ARCH_CAPABILITIES = 0x10A

LEGACY_AND_HEADER = 512 + 64  # XSAVE legacy region + header

# XSAVE state components a model can enable: component -> (name, size,
# standard-format offset as Intel lays it out (SDM vol. 1, 13.4), the macro
# of the feature that enables it). An XSTATE component is supported when the
# feature bit is set in the model.
XSAVE_COMPONENTS = [
    (2, "AVX", 256, 576, ("FEAT_1_ECX", "CPUID_EXT_AVX")),
    (3, "BNDREGS", 64, 960, ("FEAT_7_0_EBX", "CPUID_7_0_EBX_MPX")),
    (4, "BNDCSR", 64, 1024, ("FEAT_7_0_EBX", "CPUID_7_0_EBX_MPX")),
    (5, "OPMASK", 64, 1088, ("FEAT_7_0_EBX", "CPUID_7_0_EBX_AVX512F")),
    (6, "ZMM_Hi256", 512, 1152, ("FEAT_7_0_EBX", "CPUID_7_0_EBX_AVX512F")),
    (7, "Hi16_ZMM", 1024, 1664, ("FEAT_7_0_EBX", "CPUID_7_0_EBX_AVX512F")),
    (9, "PKRU", 8, 2688, ("FEAT_7_0_ECX", "CPUID_7_0_ECX_PKU")),
    (17, "XTILECFG", 64, 2752, ("FEAT_7_0_EDX", "CPUID_7_0_EDX_AMX_TILE")),
    (18, "XTILEDATA", 8192, 2816, ("FEAT_7_0_EDX", "CPUID_7_0_EDX_AMX_TILE")),
]
XSAVE_ALIGNED_64 = {18}  # leaf 0xD.n ECX bit 1

# Version props that set model fields rather than feature bits.
SCALAR_PROPS = {"level", "xlevel", "family", "model", "stepping"}
# Props that do not touch anything a profile records (nested VMX/SVM
# controls and the like).
IGNORED_PROP_PREFIXES = ("vmx-",)


class ParseError(Exception):
    pass


# --------------------------------------------------------------------------
# C source helpers


def strip_comments(text):
    """Removes /* */ and // comments, leaving string and char literals."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"' or c == "'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise ParseError("unterminated comment")
            out.append(" ")
            i = j + 2
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_close(text, open_pos):
    """Index of the bracket closing the one at open_pos (strings skipped)."""
    pairs = {"{": "}", "(": ")", "[": "]"}
    stack = [pairs[text[open_pos]]]
    i = open_pos + 1
    while i < len(text):
        c = text[i]
        if c == '"':
            i += 1
            while text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c in pairs:
            stack.append(pairs[c])
        elif c in ")]}":
            if c != stack.pop():
                raise ParseError("unbalanced brackets near offset %d" % i)
            if not stack:
                return i
        i += 1
    raise ParseError("unterminated bracket at offset %d" % open_pos)


def split_top_level(body, sep=","):
    """Splits body at `sep` outside brackets and strings."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(body):
        c = body[i]
        if c == '"':
            i += 1
            while body[i] != '"':
                i += 2 if body[i] == "\\" else 1
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(body[start:i])
            start = i + 1
        i += 1
    parts.append(body[start:])
    return [p.strip() for p in parts if p.strip()]


STRING_LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"')


def c_string(expr):
    """The value of one or more adjacent C string literals."""
    expr = expr.strip()
    pieces = STRING_LITERAL.findall(expr)
    if not pieces or STRING_LITERAL.sub("", expr).strip():
        raise ParseError("not a string literal: %r" % expr)
    return "".join(bytes(p, "ascii").decode("unicode_escape") for p in pieces)


# --------------------------------------------------------------------------
# Macros of cpu.h


class Macros:
    """Object-like #defines of cpu.h (and cpu.c), evaluated on demand."""

    TOKEN = re.compile(
        r"\s*(?:(0[xX][0-9a-fA-F]+|\d+)[uUlL]*|([A-Za-z_]\w*)|(<<|>>|[|&~()+\-*^]))")

    def __init__(self, header_text):
        self.bodies = {}
        self.cache = {}
        text = strip_comments(header_text.replace("\\\n", " "))
        for line in text.splitlines():
            m = re.match(r"\s*#\s*define\s+([A-Za-z_]\w*)(\(?)(.*)$", line)
            if m and not m.group(2):  # skip function-like macros
                self.bodies[m.group(1)] = m.group(3).strip()

    def string(self, name):
        return c_string(self.bodies[name])

    def value(self, name, _stack=()):
        if name in self.cache:
            return self.cache[name]
        if name not in self.bodies:
            raise ParseError("unknown macro %s" % name)
        if name in _stack:
            raise ParseError("recursive macro %s" % name)
        v = self.eval(self.bodies[name], _stack + (name,))
        self.cache[name] = v
        return v

    def eval(self, expr, _stack=()):
        """Evaluates an integer expression of literals, macros and | & ~ <<
        >> + - * ^ ( ), the forms QEMU's feature tables use."""
        out, pos = [], 0
        expr = expr.strip()
        while pos < len(expr):
            m = self.TOKEN.match(expr, pos)
            if not m or m.end() == pos:
                raise ParseError("cannot evaluate %r" % expr)
            pos = m.end()
            num, ident, op = m.groups()
            if num is not None:
                out.append(str(int(num, 0)))
            elif ident is not None:
                out.append(str(self.value(ident, _stack)))
            else:
                out.append(op)
        # Only digits, operators and parentheses remain.
        return eval(" ".join(out), {"__builtins__": {}}, {}) & ((1 << 64) - 1)


# --------------------------------------------------------------------------
# Tables of cpu.c


def find_array(text, decl_regex):
    m = re.search(decl_regex, text)
    if not m:
        raise ParseError("no match for %s" % decl_regex)
    open_pos = text.index("{", m.end() - 1)
    return text[open_pos + 1:matching_close(text, open_pos)]


def parse_fields(body):
    """`.key = value` and `.features[FEAT_X] = value` items of an initializer."""
    fields, features = {}, {}
    for item in split_top_level(body):
        m = re.match(r"\.features\s*\[\s*(\w+)\s*\]\s*=\s*(.*)$", item, re.S)
        if m:
            features[m.group(1)] = m.group(2)
            continue
        m = re.match(r"\.(\w+)\s*=\s*(.*)$", item, re.S)
        if m:
            fields[m.group(1)] = m.group(2).strip()
    return fields, features


def top_level_braces(body):
    """The bodies of the `{ ... }` elements of an initializer list."""
    items, i = [], 0
    while True:
        i = body.find("{", i)
        if i < 0:
            return items
        j = matching_close(body, i)
        items.append(body[i + 1:j])
        i = j + 1


def parse_feature_names(cpu_c):
    """feature_word_info[]: FEAT_X -> list of property names (None: unnamed)."""
    body = find_array(cpu_c, r"FeatureWordInfo\s+feature_word_info\s*\[[^\]]*\]\s*=\s*\{")
    names = {}
    for m in re.finditer(r"\[\s*(FEAT_\w+)\s*\]\s*=\s*\{", body):
        open_pos = m.end() - 1
        entry = body[open_pos + 1:matching_close(body, open_pos)]
        fm = re.search(r"\.feat_names\s*=\s*\{", entry)
        if not fm:
            continue
        lst = entry[fm.end():matching_close(entry, fm.end() - 1)]
        word = []
        for tok in split_top_level(lst):
            dm = re.match(r"\[\s*(\w+)\s*\]\s*=\s*(.*)$", tok, re.S)
            if dm:  # designated initializer: [54] = "name"
                index = int(dm.group(1), 0)
                word.extend([None] * (index + 1 - len(word)))
                word[index] = None if dm.group(2) == "NULL" else c_string(dm.group(2))
            else:
                word.append(None if tok == "NULL" else c_string(tok))
        names[m.group(1)] = word
    return names


def parse_models(cpu_c):
    body = find_array(cpu_c, r"X86CPUDefinition\s+builtin_x86_defs\s*\[\s*\]\s*=\s*\{")
    models = {}
    for entry in top_level_braces(body):
        fields, features = parse_fields(entry)
        if "name" in fields:
            models[c_string(fields["name"])] = (fields, features)
    return models


def parse_versions(versions_expr):
    """[(version, [(prop, value), ...]), ...] from a .versions initializer."""
    open_pos = versions_expr.index("{", versions_expr.index(")"))
    body = versions_expr[open_pos + 1:matching_close(versions_expr, open_pos)]
    versions = []
    for entry in top_level_braces(body):
        fields, _ = parse_fields(entry)
        if "version" not in fields:
            continue  # the terminating { }
        props = []
        if "props" in fields:
            p = fields["props"]
            pbody = p[p.index("{", p.index(")")) + 1:matching_close(p, p.index("{", p.index(")")))]
            for prop in top_level_braces(pbody):
                parts = split_top_level(prop)
                if len(parts) == 2:
                    props.append((c_string(parts[0]), c_string(parts[1])))
        versions.append((int(fields["version"], 0), props))
    return versions


# --------------------------------------------------------------------------
# The model, with its version's props applied


class Model:
    def __init__(self, name, version, fields, feature_exprs, macros, feat_names):
        self.name = name
        self.version = version
        self.macros = macros
        self.level = int(fields["level"], 0)
        self.xlevel = int(fields.get("xlevel", "0"), 0)
        self.family = int(fields["family"], 0)
        self.model = int(fields["model"], 0)
        self.stepping = int(fields["stepping"], 0)
        vendor = fields["vendor"]
        self.vendor = c_string(vendor) if vendor.startswith('"') else macros.string(vendor)
        self.model_id = c_string(fields["model_id"])
        self.features = {}
        self.ignored_props = []
        for word in ("FEAT_1_EDX", "FEAT_1_ECX", "FEAT_6_EAX", "FEAT_7_0_EBX",
                     "FEAT_7_0_ECX", "FEAT_7_0_EDX", "FEAT_7_1_EAX",
                     "FEAT_8000_0001_EDX", "FEAT_8000_0001_ECX",
                     "FEAT_8000_0007_EDX", "FEAT_8000_0008_EBX",
                     "FEAT_8000_0021_EAX", "FEAT_XSAVE",
                     "FEAT_ARCH_CAPABILITIES"):
            expr = feature_exprs.get(word)
            self.features[word] = macros.eval(expr) if expr else 0

        versions = parse_versions(fields["versions"]) if "versions" in fields else [(1, [])]
        known = [v for v, _ in versions]
        if version not in known:
            raise ParseError("%s has versions %s, not %d" % (name, known, version))
        prop_index = {}
        for word, names in feat_names.items():
            for bit, prop in enumerate(names):
                if prop:
                    prop_index[prop] = (word, bit)
        for v, props in versions:
            if v > version:
                break
            for prop, value in props:
                self.apply_prop(prop, value, prop_index)

        if self.vendor == "AuthenticAMD":
            # QEMU's table must not list the leaf-1 EDX bits that AMD mirrors
            # in 0x80000001 EDX; QEMU copies them when it realizes an AMD
            # model (x86_cpu_realizefn), as AMD hardware reports them.
            aliases = macros.value("CPUID_EXT2_AMD_ALIASES")
            edx = self.features["FEAT_8000_0001_EDX"] & ~aliases
            self.features["FEAT_8000_0001_EDX"] = edx | (self.features["FEAT_1_EDX"] & aliases)

    def apply_prop(self, prop, value, prop_index):
        if prop == "model-id":
            self.model_id = value
        elif prop == "vendor":
            self.vendor = value
        elif prop in SCALAR_PROPS:
            setattr(self, prop, int(value, 0))
        elif prop.replace("_", "-") in prop_index or prop in prop_index:
            word, bit = prop_index.get(prop) or prop_index[prop.replace("_", "-")]
            if value not in ("on", "off"):
                raise ParseError("prop %s=%s is not on/off" % (prop, value))
            if word not in self.features:
                self.ignored_props.append(prop)
                return
            if value == "on":
                self.features[word] |= 1 << bit
            else:
                self.features[word] &= ~(1 << bit)
        elif prop.startswith(IGNORED_PROP_PREFIXES):
            self.ignored_props.append(prop)
        else:
            raise ParseError("unknown prop %r in %s" % (prop, self.name))

    def has(self, word, macro):
        return bool(self.features[word] & self.macros.value(macro))


# --------------------------------------------------------------------------
# The profile


def leaf1_eax(family, model, stepping):
    if family > 0xF:
        base_family, ext_family = 0xF, family - 0xF
    else:
        base_family, ext_family = family, 0
    return ((ext_family & 0xFF) << 20 | ((model >> 4) & 0xF) << 16 |
            (base_family & 0xF) << 8 | (model & 0xF) << 4 | (stepping & 0xF))


def brand_regs(model_id):
    raw = model_id.encode("ascii")
    if len(raw) > 48:
        raise ParseError("model_id longer than 48 bytes")
    raw = raw.ljust(48, b"\0")
    words = [int.from_bytes(raw[i:i + 4], "little") for i in range(0, 48, 4)]
    return [words[i:i + 4] for i in range(0, 12, 4)]


def xsave_layout(m, layout):
    """[(component, size, offset)] of the components the model supports."""
    comps = []
    for comp, _, size, intel_offset, (word, macro) in XSAVE_COMPONENTS:
        if m.has(word, macro):
            comps.append((comp, size, intel_offset))
    if layout == "amd":
        # AMD does not reserve room for components it does not implement
        # (MPX, the LWP area): its standard-format offsets follow each other
        # in component order from the end of the header.
        packed, offset = [], LEGACY_AND_HEADER
        for comp, size, _ in comps:
            packed.append((comp, size, offset))
            offset += size
        comps = packed
    return comps


def entry(leaf, subleaf=0, significant=False, eax=0, ebx=0, ecx=0, edx=0):
    e = {"leaf": leaf, "subleaf": subleaf, "subleafSignificant": significant,
         "eax": eax, "ebx": ebx, "ecx": ecx, "edx": edx}
    return {k: v for k, v in e.items() if v}  # proto3 JSON drops zero fields


def build_profile(m, qemu_ref, host, phys_bits, virt_bits, layout):
    f = m.features
    intel = m.vendor == "GenuineIntel"
    amd = m.vendor == "AuthenticAMD"
    if not (intel or amd):
        raise ParseError("vendor %s is not handled" % m.vendor)
    vendor_regs = VENDOR_REGS[m.vendor]
    fms = leaf1_eax(m.family, m.model, m.stepping)
    cpuid = []

    # Basic leaves.
    cpuid.append(entry(0, eax=m.level, ebx=vendor_regs[0], edx=vendor_regs[1],
                       ecx=vendor_regs[2]))
    ecx1 = (f["FEAT_1_ECX"] | HYPERVISOR_BIT) & ~OSXSAVE_BIT
    cpuid.append(entry(1, eax=fms, ecx=ecx1, edx=f["FEAT_1_EDX"]))
    if m.level >= 6:
        eax6 = f["FEAT_6_EAX"] or (ARAT_BIT if intel else 0)
        cpuid.append(entry(6, eax=eax6))
    if m.level >= 7:
        max_sub = 1 if f["FEAT_7_1_EAX"] else 0
        cpuid.append(entry(7, 0, True, eax=max_sub, ebx=f["FEAT_7_0_EBX"],
                           ecx=f["FEAT_7_0_ECX"], edx=f["FEAT_7_0_EDX"]))
        if max_sub:
            cpuid.append(entry(7, 1, True, eax=f["FEAT_7_1_EAX"]))
    xcr0 = 0
    xsave_max = 0
    if m.level >= 0xD and m.has("FEAT_1_ECX", "CPUID_EXT_XSAVE"):
        comps = xsave_layout(m, layout)
        xcr0 = 0x3 | sum(1 << c for c, _, _ in comps)
        xsave_max = max([LEGACY_AND_HEADER] + [o + s for _, s, o in comps])
        cpuid.append(entry(0xD, 0, True, eax=xcr0 & 0xFFFFFFFF,
                           ebx=LEGACY_AND_HEADER, ecx=xsave_max, edx=xcr0 >> 32))
        cpuid.append(entry(0xD, 1, True, eax=f["FEAT_XSAVE"]))
        for comp, size, offset in comps:
            cpuid.append(entry(0xD, comp, True, eax=size, ebx=offset,
                               ecx=0x2 if comp in XSAVE_ALIGNED_64 else 0))

    # Extended leaves.
    if m.xlevel >= 0x80000000:
        ext_vendor = vendor_regs if amd else (0, 0, 0)
        cpuid.append(entry(0x80000000, eax=m.xlevel, ebx=ext_vendor[0],
                           edx=ext_vendor[1], ecx=ext_vendor[2]))
    if m.xlevel >= 0x80000001:
        cpuid.append(entry(0x80000001, eax=fms if amd else 0,
                           ecx=f["FEAT_8000_0001_ECX"], edx=f["FEAT_8000_0001_EDX"]))
    if m.xlevel >= 0x80000004:
        for i, (a, b, c, d) in enumerate(brand_regs(m.model_id)):
            cpuid.append(entry(0x80000002 + i, eax=a, ebx=b, ecx=c, edx=d))
    if m.xlevel >= 0x80000007:
        cpuid.append(entry(0x80000007, edx=f["FEAT_8000_0007_EDX"] | INVARIANT_TSC_BIT))
    if m.xlevel >= 0x80000008:
        cpuid.append(entry(0x80000008, eax=phys_bits | virt_bits << 8,
                           ebx=f["FEAT_8000_0008_EBX"]))
    if m.xlevel >= 0x80000021 and f["FEAT_8000_0021_EAX"]:
        cpuid.append(entry(0x80000021, eax=f["FEAT_8000_0021_EAX"]))

    # KVM's leaves; KVM_GET_SUPPORTED_CPUID lists them after the others.
    cpuid.append(entry(0x40000000, eax=0x40000001, ebx=KVM_SIGNATURE[0],
                       ecx=KVM_SIGNATURE[1], edx=KVM_SIGNATURE[2]))
    cpuid.append(entry(0x40000001, eax=KVM_PV_FEATURES_EAX))

    if layout == "amd" and xcr0 & ~0x7:
        assumed = ("leaf 0x40000001, 0x80000007, the address bits and AMD's packed "
                   "XSAVE offsets (leaf 0xD) are assumed")
    else:
        assumed = "leaf 0x40000001, 0x80000007 and the address bits are assumed"
    source = ("QEMU %s target/i386/cpu.c builtin_x86_defs '%s' v%d, converted by "
              "tools/cpu-profiles/qemu_model_to_profile.py; %s, not in QEMU's table"
              % (qemu_ref, m.name, m.version, assumed))

    profile = {
        "formatVersion": FORMAT_VERSION,
        "host": host,
        "source": source,
        "vendor": m.vendor,
        "family": m.family,
        "model": m.model,
        "stepping": m.stepping,
        "modelName": m.model_id,
        "cpuid": cpuid,
    }
    if f["FEAT_ARCH_CAPABILITIES"]:
        profile["featureMsrs"] = [{"index": MSR_IA32_ARCH_CAPABILITIES,
                                   "value": str(f["FEAT_ARCH_CAPABILITIES"])}]
    profile["xcr0Supported"] = str(xcr0)
    profile["xsaveMaxBytes"] = xsave_max
    profile["physAddressBits"] = phys_bits
    profile["virtAddressBits"] = virt_bits
    profile["tscScaling"] = True
    return {k: v for k, v in profile.items() if v not in (0, "0", "", False, None, [])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cpu_c", help="QEMU's target/i386/cpu.c")
    ap.add_argument("cpu_h", help="QEMU's target/i386/cpu.h")
    ap.add_argument("model", help="model name, e.g. Skylake-Server")
    ap.add_argument("version", nargs="?", type=int, default=1,
                    help="model version whose props are applied (default 1)")
    ap.add_argument("--qemu-ref", default="(unknown revision)",
                    help="the QEMU revision the files came from, for `source`")
    ap.add_argument("--host", help="profile host name "
                    "(default: <model>[-v<N>]-qemu-model, lower case)")
    ap.add_argument("--phys-bits", type=int,
                    help="physical address bits (default: 46 Intel, 48 AMD; "
                    "QEMU's table does not record them)")
    ap.add_argument("--virt-bits", type=int, default=48,
                    help="linear address bits (default 48)")
    ap.add_argument("--xsave-layout", choices=("auto", "intel", "amd"), default="auto",
                    help="standard-format XSAVE offsets: Intel's (SDM) or AMD's "
                    "packed ones; auto follows the vendor")
    ap.add_argument("-o", "--output", help="output file (default stdout)")
    args = ap.parse_args(argv)

    with open(args.cpu_c, encoding="utf-8", errors="replace") as fh:
        cpu_c_raw = fh.read()
    cpu_c = strip_comments(cpu_c_raw)
    with open(args.cpu_h, encoding="utf-8", errors="replace") as fh:
        # cpu.c's own #defines (e.g. PPRO_FEATURES) come after cpu.h's.
        macros = Macros(fh.read() + "\n" + cpu_c_raw)

    models = parse_models(cpu_c)
    if args.model not in models:
        ap.error("no model %r in %s; there are: %s"
                 % (args.model, args.cpu_c, ", ".join(sorted(models))))
    fields, feature_exprs = models[args.model]
    m = Model(args.model, args.version, fields, feature_exprs, macros,
              parse_feature_names(cpu_c))
    for prop in m.ignored_props:
        print("note: prop %r does not affect a profile; ignored" % prop, file=sys.stderr)

    amd = m.vendor == "AuthenticAMD"
    layout = args.xsave_layout
    if layout == "auto":
        layout = "amd" if amd else "intel"
    phys_bits = args.phys_bits or (48 if amd else 46)
    host = args.host or ("%s%s-qemu-model" % (
        args.model.lower(), "" if args.version == 1 else "-v%d" % args.version))

    profile = build_profile(m, args.qemu_ref, host, phys_bits, args.virt_bits, layout)
    text = json.dumps(profile, indent=2) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
