#!/usr/bin/env python3
"""Render a weft trace (WEFT_TRACE=out.json) as an SVG timeline.

    python3 tools/trace_svg.py out.json out.svg [START_US END_US]

Perfetto (ui.perfetto.dev) and chrome://tracing are the real viewers; this
draws the same picture without a browser, for documentation and for a quick
look over ssh: one lane per worker, a box per run of a fiber (colour by
fiber name, label when wide enough), a red tick per park, a blue tick per
steal, and a time axis in microseconds.
"""
import hashlib
import json
import sys


def colour(name):
    h = int(hashlib.md5(name.encode()).hexdigest()[:6], 16)
    return "hsl(%d,55%%,62%%)" % (h % 360)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    events = json.load(open(sys.argv[1]))["traceEvents"]
    lanes = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            lanes[e["tid"]] = e["args"]["name"]
    timed = [e for e in events if e.get("ph") in ("X", "i")]
    if not timed:
        sys.exit("no events")
    t0 = min(e["ts"] for e in timed)
    t1 = max(e["ts"] + e.get("dur", 0) for e in timed)
    if len(sys.argv) >= 5:
        t0, t1 = float(sys.argv[3]), float(sys.argv[4])
    width, lane_h, left, top = 1100, 34, 80, 30
    scale = (width - left - 20) / max(t1 - t0, 1e-9)
    tids = sorted(lanes) or sorted({e["tid"] for e in timed})
    height = top + lane_h * len(tids) + 40
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif" font-size="11">' % (width, height),
           '<rect width="100%" height="100%" fill="white"/>']
    x = lambda t: left + (t - t0) * scale
    for i, tid in enumerate(tids):
        y = top + i * lane_h
        out.append('<text x="4" y="%d">%s</text>' % (y + lane_h / 2 + 4, lanes.get(tid, tid)))
        out.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#ddd"/>'
                   % (left, width - 20, y + lane_h - 2, y + lane_h - 2))
    row = {tid: i for i, tid in enumerate(tids)}
    for e in timed:
        if e["tid"] not in row:
            continue
        end = e["ts"] + e.get("dur", 0)
        if end < t0 or e["ts"] > t1:
            continue
        y = top + row[e["tid"]] * lane_h
        if e["ph"] == "X":
            x0, x1 = max(x(e["ts"]), left), min(x(end), width - 20)
            w = max(x1 - x0, 0.5)
            out.append('<rect x="%.2f" y="%d" width="%.2f" height="%d" fill="%s">'
                       '<title>%s: %s</title></rect>'
                       % (x0, y + 6, w, lane_h - 14, colour(e["name"]), e["name"],
                          e.get("args", {}).get("end", "")))
            if w > 7 * len(e["name"]):
                out.append('<text x="%.2f" y="%d">%s</text>' % (x0 + 2, y + lane_h / 2 + 3, e["name"]))
        else:
            c = "#c00" if e.get("cat") in ("park", "io") else "#06c"
            out.append('<line x1="%.2f" x2="%.2f" y1="%d" y2="%d" stroke="%s">'
                       '<title>%s</title></line>' % (x(e["ts"]), x(e["ts"]), y + 2, y + 8, c, e["name"]))
    ticks = 10
    for k in range(ticks + 1):
        t = t0 + (t1 - t0) * k / ticks
        xx = x(t)
        out.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#999"/>'
                   % (xx, xx, height - 38, height - 32))
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%.0f us</text>' % (xx, height - 20, t - t0))
    out.append("</svg>")
    open(sys.argv[2], "w").write("\n".join(out))


if __name__ == "__main__":
    main()
