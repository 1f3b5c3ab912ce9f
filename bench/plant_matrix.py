"""check.sh's planted-nondeterminism table: for each source planted by
plant.mjs, whether each audit reported its file as differing.

Usage: plant_matrix.py LOG_DIR PLANT_MJS
"""

import json
import os
import re
import sys

logs, plant_src = sys.argv[1], sys.argv[2]
plants = re.findall(r"^  '?([a-z-]+)'?: ", open(plant_src).read(), re.M)


def exit_code(name):
    path = os.path.join(logs, name + ".rc")
    return int(open(path).read()) if os.path.exists(path) else None


columns = []  # (tool, plants it reported, why it has no answer)
code = exit_code("plant-farm-check")
try:
    report = json.load(open(os.path.join(logs, "plant-farm-check.json")))
    paths = [d["path"] for o in report["outputs"].values() for d in o.get("differences", [])]
    columns.append(("farm check", {m for p in paths for m in re.findall(r"plant-([a-z-]+)\.txt", p)}, None))
except (OSError, ValueError, KeyError, AttributeError):
    columns.append(("farm check", set(), f"no JSON report (exit {code}); see plant-farm-check.log"))

for tool, log in (("reprotest (farm)", "plant-reprotest-farm"), ("reprotest (host)", "plant-reprotest-host")):
    code = exit_code(log)
    if code is None:
        continue
    text = open(os.path.join(logs, log + ".log"), errors="replace").read()
    if code not in (0, 1) or "Traceback" in text:
        columns.append((tool, set(), f"reprotest failed (exit {code}); see {log}.log"))
        continue
    found = set(re.findall(r"\+\+\+ \S*/experiment-1/source-root/\S*plant-([a-z-]+)\.txt", text))
    columns.append((tool, found, None))

width = max(len(p) for p in plants) + 2
print("planted source".ljust(width) + "".join(c[0].ljust(18) for c in columns).rstrip())
for p in plants:
    cells = ("-" if why else ("DETECTED" if p in found else "same") for _, found, why in columns)
    print(p.ljust(width) + "".join(c.ljust(18) for c in cells).rstrip())
for tool, _, why in columns:
    if why:
        print(f"{tool}: {why}")
