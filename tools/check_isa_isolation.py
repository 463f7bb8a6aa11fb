#!/usr/bin/env python3
"""Proves that an x86-64 build of edgeformer keeps every instruction above the x86-64 baseline (SSE2) inside
the per-ISA kernel copies (cmake/EfIsa.cmake), so the generic path runs on any x86-64 CPU and no AVX2 or
AVX-512 instruction can be reached except through the run-time dispatch.

    python tools/check_isa_isolation.py BUILD_DIR [EXTENSION.so]

BUILD_DIR is the CMake build directory the extension was linked in (e.g. pip wheel . -Cbuild-dir=BUILD_DIR);
EXTENSION.so defaults to the _core*.so in it (pass the one taken out of the repaired wheel to check that).
Linux + binutils (nm, objdump) only. Checks:

1. compile flags (build.ninja): no -march/-mtune anywhere; -m<isa> flags only on the per-ISA kernel objects.
2. symbols (nm): each per-ISA object defines exactly one non-local symbol, its table entry point
   ef::cpu::kernels_<isa>(), and no weak / COMDAT / unique symbol. A weak definition (an inline function or a
   template instantiated in several objects) is what would let the linker keep the AVX-512 copy and call it
   from generic code; without one the linker has nothing to choose between.
3. instructions (objdump -d): the core library's other objects contain no instruction above the baseline
   (no VEX/EVEX encoding, no xmm/ymm/zmm beyond SSE2, no SSE3..SSE4.2, POPCNT, LZCNT, BMI, MOVBE), and every
   such instruction in the linked extension is accounted for by the per-ISA objects: the extension's
   multiset of above-baseline instructions equals the sum of theirs (the binding objects are LTO bitcode,
   so the linked file is where their machine code is checked).
Exit status 0 when all hold; each failure is printed.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import subprocess
import sys

# Above the x86-64 baseline (SSE2), as objdump prints them (AT&T; a size suffix b/w/l/q may follow).
# AVX, AVX2, AVX-512, FMA and F16C are all VEX/EVEX-encoded and print with a leading 'v': caught separately.
ABOVE_BASELINE = [
    # SSE3
    "addsubps", "addsubpd", "haddps", "haddpd", "hsubps", "hsubpd", "lddqu", "movddup", "movshdup", "movsldup",
    "fisttp", "monitor", "mwait",
    # SSSE3
    "pabsb", "pabsw", "pabsd", "palignr", "phaddw", "phaddd", "phaddsw", "phsubw", "phsubd", "phsubsw",
    "pmaddubsw", "pmulhrsw", "pshufb", "psignb", "psignw", "psignd",
    # SSE4.1
    "blendps", "blendpd", "blendvps", "blendvpd", "pblendvb", "pblendw", "dpps", "dppd", "extractps",
    "insertps", "movntdqa", "mpsadbw", "packusdw", "pcmpeqq", "pextrb", "pextrd", "pextrq", "pinsrb", "pinsrd",
    "pinsrq", "phminposuw", "pmaxsb", "pmaxsd", "pmaxud", "pmaxuw", "pminsb", "pminsd", "pminud", "pminuw",
    "pmovsx[bwd][wdq]", "pmovzx[bwd][wdq]", "pmuldq", "pmulld", "ptest", "roundps", "roundpd", "roundss", "roundsd",
    # SSE4.2, POPCNT, LZCNT, BMI1/2 (general-purpose VEX), MOVBE
    "crc32", "pcmpestri", "pcmpestrm", "pcmpistri", "pcmpistrm", "pcmpgtq", "popcnt", "lzcnt", "tzcnt", "andn",
    "bextr", "blsi", "blsmsk", "blsr", "bzhi", "mulx", "pdep", "pext", "rorx", "sarx", "shlx", "shrx", "movbe",
    # AVX-512 mask-register instructions
    "k(?:mov|and|andn|or|xor|xnor|not|shiftl|shiftr|unpck|ortest|test|add)[bwdq]?[bwdq]?",
]
ABOVE_RE = re.compile(r"(?:%s)[bwlq]?" % "|".join(ABOVE_BASELINE))
INSN = re.compile(r"^\s*[0-9a-f]+:\s+(?:(?:rex\.?\w*|lock|rep\w*|notrack|bnd|data16|addr32|cs|ds)\s+)*([a-z][a-z0-9.]*)\s*(.*)$")
WIDE_REG = re.compile(r"%(?:ymm|zmm)\d+|%k[0-7]\b")


def above_baseline(mnemonic: str, operands: str) -> bool:
    # VEX/EVEX-encoded: AT&T prints every AVX/AVX2/AVX-512/FMA/F16C instruction with a leading 'v'
    if mnemonic.startswith("v") and mnemonic not in ("verr", "verw"):
        return True
    if WIDE_REG.search(operands):
        return True
    return ABOVE_RE.fullmatch(mnemonic) is not None


def insns(path: str) -> collections.Counter:
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-M", "suffix", path], check=True,
                         capture_output=True, text=True).stdout
    c = collections.Counter()
    for ln in out.splitlines():
        m = INSN.match(ln)
        if m and above_baseline(m.group(1), m.group(2)):
            wide = "zmm" if "%zmm" in m.group(2) else "ymm" if "%ymm" in m.group(2) else ""
            c[f"{m.group(1)} {wide}".strip()] += 1
    return c


def zmm(c: collections.Counter) -> int:
    return sum(v for k, v in c.items() if k.endswith(" zmm"))


def build_flags(build: str) -> dict:
    """object file -> compile FLAGS, from build.ninja (the generator scikit-build-core uses)."""
    flags, cur = {}, None
    with open(os.path.join(build, "build.ninja")) as f:
        for ln in f:
            if ln.startswith("build "):
                out = ln[6:].split(":", 1)[0].strip()
                cur = out if out.endswith((".o", ".obj")) else None
            elif cur and ln.startswith("  FLAGS = "):
                flags[cur] = ln[len("  FLAGS = "):].strip()
    return flags


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    build = os.path.abspath(sys.argv[1])
    so = sys.argv[2] if len(sys.argv) > 2 else (glob.glob(os.path.join(build, "_core*.so")) or [None])[0]
    fails = []

    # 1. compile flags
    flags = build_flags(build)
    if not flags:
        fails.append(f"no compile rules found in {build}/build.ninja")
    for obj, fl in sorted(flags.items()):
        per_isa = "_kernels_" in obj
        native = re.search(r"(?:^|\s)(-m(?:arch|tune|cpu)=\S+)", fl)
        if native:
            fails.append(f"flags: {obj} is compiled with {native.group(1)}")
        isa_flags = re.findall(r"(?:^|\s)(-m(?:avx\S*|fma|f16c|sse\S*|bmi\S*|popcnt|lzcnt|movbe))", fl)
        if isa_flags and not per_isa:
            fails.append(f"flags: {obj} (not a per-ISA kernel object) is compiled with {' '.join(isa_flags)}")
    n_isa_objs = sum("_kernels_" in o for o in flags)
    print(f"[flags] {len(flags)} objects; -m<isa> flags only on the {n_isa_objs} per-ISA kernel objects; no -march")

    # 2. symbols of the per-ISA objects
    isa_objs = sorted(glob.glob(os.path.join(build, "CMakeFiles", "*_kernels_*.dir", "**", "*.o"), recursive=True))
    if not isa_objs:
        fails.append("no per-ISA kernel objects (CMakeFiles/*_kernels_*.dir) in the build")
    for obj in isa_objs:
        isa = re.search(r"_kernels_(\w+)\.dir", obj).group(1)
        out = subprocess.run(["nm", "-C", "--defined-only", obj], check=True, capture_output=True, text=True).stdout
        exported, weak = [], []
        for ln in out.splitlines():
            parts = ln.split(None, 2)
            if len(parts) < 3:
                continue
            kind, name = parts[1], parts[2]
            if kind in "WwVvu":
                weak.append(f"{kind} {name}")
            elif kind.isupper():
                exported.append(f"{kind} {name}")
        want = [f"T ef::cpu::kernels_{isa}()"]
        if exported != want or weak:
            fails.append(f"symbols: {obj}: exported {exported} (want {want}), weak/unique {weak}")
        print(f"[nm] {isa}: defines {exported}, weak/COMDAT/unique: {len(weak)}")

    # 3. instructions
    lib = glob.glob(os.path.join(build, "lib*edgeformer_core*.a"))
    core = []
    for obj, fl in flags.items():
        if "_kernels_" not in obj and "-flto" not in fl and os.path.exists(os.path.join(build, obj)):
            core.append(os.path.join(build, obj))
    leaked = collections.Counter()
    for obj in core:
        c = insns(obj)
        if c:
            fails.append(f"insns: {os.path.relpath(obj, build)} has above-baseline instructions: {dict(c.most_common(8))}")
        leaked += c
    print(f"[objdump] {len(core)} generic objects (core library{' ' + os.path.basename(lib[0]) if lib else ''}):"
          f" {sum(leaked.values())} instructions above x86-64 baseline")
    per_isa = collections.Counter()
    for obj in isa_objs:
        c = insns(obj)
        name = re.search(r"([^/]*_kernels_\w+)\.dir", obj).group(1)
        print(f"[objdump] {name}: {sum(c.values())} above-baseline instructions, {zmm(c)} on zmm registers")
        if "avx512" not in name and "amx" not in name and zmm(c):  # (amx: the avx512bf16 copy plus tiles)
            fails.append(f"insns: {name} uses zmm registers")
        per_isa += c
    if so:
        c = insns(so)
        extra = c - per_isa
        missing = per_isa - c
        print(f"[objdump] {os.path.basename(so)}: {sum(c.values())} above-baseline instructions ({zmm(c)} on zmm), "
              f"{sum(per_isa.values())} from the per-ISA objects; unaccounted: {sum(extra.values())}")
        if extra:
            fails.append(f"insns: {so} has above-baseline instructions not from the per-ISA objects: "
                         f"{dict(extra.most_common(20))}")
        if missing:  # not a leak, but the extension was not linked from these objects
            fails.append(f"insns: {so} lacks instructions of the per-ISA objects (another build?): "
                         f"{dict(missing.most_common(10))}")
    else:
        fails.append(f"no _core*.so in {build}")

    for f in fails:
        print("FAIL", f)
    print("ISA isolation:", "FAILED" if fails else "OK")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
