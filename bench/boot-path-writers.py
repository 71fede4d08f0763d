#!/usr/bin/env python3
"""Background write load for bench/boot-path.sh (WRITERS=N): node writes through the REST
APIs of several ironboot conductors that share one database, at a fixed total rate.

  boot-path-writers.py list API_URL UUIDS_FILE
      writes the uuid of every node (GET /v1/nodes, following `next`) to UUIDS_FILE
  boot-path-writers.py run UUIDS_FILE RATE MAX_SECONDS API_URL...
      writes until SIGTERM/SIGINT or MAX_SECONDS, then prints one line:
      "ok=N errors=M seconds=S rate=R unsent=U p50_ms=A p99_ms=B detail=..."
  boot-path-writers.py swift-stub PORT_FILE
      a stand-in Swift on 127.0.0.1 (port written to PORT_FILE) that answers every HEAD
      with 200: the conductors' prepare checks ([glance] swift_internal_endpoint_url)

Each write pair picks a random node and sends, to the next APIs in round-robin order:
  PATCH /v1/nodes/<uuid>   {"driver_info": {"deploy_kernel": "swift://images/deploy/vmlinuz",
                            "deploy_ramdisk": "swift://images/deploy/initrd.img"},
                            "instance_info": {"kernel_append_params": "bench=<counter>"}}
  PUT /v1/nodes/<uuid>/boot {"target": "deploy"}
The driver_info part points the deploy images at the Swift objects that bench_seed stored
for every node, so that the PUT re-prepares the same Swift images (HEAD-checked against the
bench's stub Swift) and the node keeps being served fresh TempURLs: the write load does
not change what the boot path renders. Pairs start at RATE/2 per second (RATE writes/s)
on a fixed schedule; 16 worker threads send them, so a slow API makes pairs wait (counted
as unsent if still waiting at the end) instead of slowing the schedule. A write counts as
ok on a 2xx answer; any other answer or a failed request (timeout 10 s) is an error.
Python 3 standard library only.
"""
import json
import os
import queue
import random
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

SWIFT_REFS = {
    "deploy_kernel": "swift://images/deploy/vmlinuz",
    "deploy_ramdisk": "swift://images/deploy/initrd.img",
}
WORKERS = 16
TIMEOUT = 10


def request(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
        return resp.status, resp.read()


def list_nodes(api, out):
    url, n = f"{api}/v1/nodes?limit=1000", 0
    with open(out, "w") as f:
        while url:
            _, body = request("GET", url)
            page = json.loads(body)
            for node in page["nodes"]:
                f.write(node["uuid"] + "\n")
                n += 1
            url = page.get("next") and urllib.parse.urljoin(url, page["next"])
    print(n)


def run(uuids_file, rate, max_seconds, apis):
    with open(uuids_file) as f:
        uuids = [line.strip() for line in f if line.strip()]
    if not uuids or rate <= 0 or not apis:
        sys.exit("need nodes, a positive rate and at least one API")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    jobs = queue.Queue()
    lock = threading.Lock()
    ok, errors, latencies, detail = 0, 0, [], {}
    turn = [0]

    def next_api():
        with lock:
            api = apis[turn[0] % len(apis)]
            turn[0] += 1
        return api

    def write(method, path, body):
        nonlocal ok, errors
        t = time.perf_counter()
        try:
            status, _ = request(method, next_api() + path, body)
            what = None if 200 <= status < 300 else f"{method} {status}"
        except urllib.error.HTTPError as e:
            what = f"{method} {e.code}"
        except Exception as e:  # timeouts, refused or reset connections
            what = f"{method} {type(e).__name__}"
        with lock:
            latencies.append(time.perf_counter() - t)
            if what is None:
                ok += 1
            else:
                errors += 1
                detail[what] = detail.get(what, 0) + 1

    def worker():
        while True:
            job = jobs.get()
            if job is None:
                return
            counter, uuid = job
            write("PATCH", f"/v1/nodes/{uuid}", {
                "driver_info": SWIFT_REFS,
                "instance_info": {"kernel_append_params": f"bench={counter}"},
            })
            write("PUT", f"/v1/nodes/{uuid}/boot", {"target": "deploy"})

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    interval = 2.0 / rate  # one pair = two writes
    start = time.monotonic()
    deadline = start + max_seconds
    sent = 0
    while not stop.is_set():
        now = time.monotonic()
        if now >= deadline:
            break
        due = start + sent * interval
        if due > now:
            stop.wait(min(due, deadline) - now)
            continue
        jobs.put((sent, random.choice(uuids)))
        sent += 1
    elapsed = time.monotonic() - start
    unsent = 0
    while True:  # pairs still queued are dropped, not sent after the measurement
        try:
            if jobs.get_nowait() is not None:
                unsent += 2
        except queue.Empty:
            break
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join(TIMEOUT * 2 + 1)
    with lock:
        lat = sorted(latencies)
        pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else 0.0
        text = ",".join(f"{k.replace(' ', ':')}x{v}" for k, v in sorted(detail.items())) or "-"
        print(f"ok={ok} errors={errors} seconds={elapsed:.1f} rate={(ok + errors) / elapsed:.1f} "
              f"unsent={unsent} p50_ms={pct(0.5):.1f} p99_ms={pct(0.99):.1f} detail={text}",
              flush=True)


def swift_stub(port_file):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self):
            self.send_response(200)
            self.send_header("Content-Length", "1048576")
            self.send_header("ETag", '"0123456789abcdef0123456789abcdef"')
            self.end_headers()

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


def main():
    args = sys.argv[1:]
    if len(args) == 3 and args[0] == "list":
        list_nodes(args[1].rstrip("/"), args[2])
    elif len(args) >= 5 and args[0] == "run":
        run(args[1], float(args[2]), float(args[3]), [a.rstrip("/") for a in args[4:]])
    elif len(args) == 2 and args[0] == "swift-stub":
        swift_stub(args[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
