"""Runs python-swiftclient's generate_temp_url on a batch of cases.

stdin: JSON {"now": <float>, "cases": [{"path", "seconds", "key", "method", "absolute",
"prefix", "iso8601", "ip_range", "digest"}, ...]}
stdout: JSON list, one {"ok": <url>} or {"error": <ValueError message>} per case.

time.time() inside swiftclient.utils is pinned to "now", so relative expiries are exact.
Zone-less ISO times are read as local time by swiftclient; the caller sets TZ.
"""
import json
import sys
import time as real_time

import swiftclient.utils as utils


class PinnedTime:
    def __init__(self, now):
        self._now = now

    def time(self):
        return self._now

    def __getattr__(self, name):
        return getattr(real_time, name)


def main():
    batch = json.load(sys.stdin)
    utils.time = PinnedTime(batch["now"])
    out = []
    for c in batch["cases"]:
        try:
            url = utils.generate_temp_url(
                c["path"], c["seconds"], c["key"], c["method"],
                absolute=c["absolute"], prefix=c["prefix"], iso8601=c["iso8601"],
                ip_range=c["ip_range"], digest=c["digest"])
            out.append({"ok": url})
        except ValueError as e:
            out.append({"error": str(e)})
    json.dump(out, sys.stdout)


main()
