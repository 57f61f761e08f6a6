"""Summarises a callgrind profile by where the instructions go: total instructions (Ir) per
request, then self cost by component (the binary or library, and within a Swift binary the
module a function comes from), then the costliest functions.
Usage: callgrind_summary.py CALLGRIND_OUT REQUESTS [TOP_FUNCTIONS]"""
import collections, os, re, subprocess, sys

path, requests = sys.argv[1], int(sys.argv[2])
top = int(sys.argv[3]) if len(sys.argv) > 3 else 15

# Callgrind's format: `ob=`/`fn=` name the object and function the cost lines that follow
# belong to, names compressed to `(id)` after their first use; the cost line after `calls=` is
# the inclusive cost of a call, not the caller's own.
names = {"ob": {}, "fn": {}}
def resolve(kind, value):
    m = re.match(r"\((\d+)\)(?: (.*))?", value)
    if not m:
        return value
    if m.group(2) is not None:
        names[kind][m.group(1)] = m.group(2)
    return names[kind].get(m.group(1), value)

own = collections.Counter()
ob = fn = None
after_calls = False
with open(path) as profile:
    for line in profile:
        if line[:1].isdigit() or line[:1] in "+-*":
            if after_calls:
                after_calls = False
                continue
            fields = line.split()
            if len(fields) > 1:
                own[(ob, fn)] += int(fields[1])
            continue
        key, _, value = line.rstrip("\n").partition("=")
        if key == "ob":
            ob = resolve("ob", value)
        elif key == "cob":
            resolve("ob", value)
        elif key == "fn":
            fn = resolve("fn", value)
        elif key == "cfn":
            resolve("fn", value)
        elif key == "calls":
            after_calls = True

def component(obj, function):
    base = os.path.basename(obj or "?")
    m = re.match(r"\$s(\d+)([A-Za-z_]\w*)", function or "")
    if m and base not in ("libswiftCore.so", "libFoundation.so", "libFoundationEssentials.so"):
        module = m.group(2)[: int(m.group(1))]
        return f"{base}: {module}"
    if (function or "").startswith("$s"):
        return f"{base}: Swift standard library (specialised here)" if not base.startswith("lib") else base
    if (function or "").startswith(("llhttp_", "llhttp__")):
        return f"{base}: CNIOLLHTTP (HTTP parser)"
    if (function or "").startswith("c_nio_"):
        return f"{base}: CNIO* shims"
    return base

total = sum(own.values())
print(f"  {total / requests:,.0f} instructions per request ({total:,} in {requests:,} requests, user space only)")
by_component = collections.Counter()
for (obj, function), cost in own.items():
    by_component[component(obj, function)] += cost
print("  by component (self cost):")
for name, cost in by_component.most_common(12):
    print(f"    {100 * cost / total:5.1f} %  {cost / requests:9,.0f}/req  {name}")
print(f"  costliest {top} functions (self cost):")
ranked = own.most_common(top)
try:
    demangled = subprocess.run(["swift", "demangle", "--simplified", "--compact"], input="\n".join(f or "?" for (_, f), _ in ranked),
                               capture_output=True, text=True, check=True).stdout.splitlines()
except (OSError, subprocess.CalledProcessError):
    demangled = [f or "?" for (_, f), _ in ranked]
for ((obj, _), cost), name in zip(ranked, demangled):
    print(f"    {100 * cost / total:5.1f} %  {cost / requests:9,.0f}/req  {name[:110]}  [{os.path.basename(obj or '?')}]")
