"""Reference for bench/tempurl.sh: python-swiftclient's generate_temp_url (sha256) rate.

Usage: python tempurl_swiftclient.py PROCESSES SECONDS   -> prints URLs per second
"""
import multiprocessing
import sys
import time

from swiftclient.utils import generate_temp_url

PATH = "/v1/AUTH_a422b291f32f4674b7d7c9e8958f5d30/glance/757274c4-2856-4bd2-bb20-9a4a231e187b"
KEY = "correcthorsebatterystaple"


def worker(seconds):
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(1000):
            generate_temp_url(PATH, 1200, KEY, "GET", digest="sha256")
        count += 1000
    return count


def main():
    processes, seconds = int(sys.argv[1]), float(sys.argv[2])
    start = time.perf_counter()
    if processes == 1:
        total = worker(seconds)
    else:
        with multiprocessing.Pool(processes) as pool:
            total = sum(pool.map(worker, [seconds] * processes))
    print("%.0f" % (total / (time.perf_counter() - start)))


main()
