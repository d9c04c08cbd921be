#!/usr/bin/env python3
"""Memory after churn: starts `bosun server` on a fresh data directory, lets 32 clients create
and then delete 1 KiB ConfigMaps for SECONDS (or OBJECTS of them in all), and prints the server's RSS at start, at the end of
the load, and each WAIT/4 seconds after, until WAIT seconds have passed. Needs the Python
`kubernetes` client (scripts/test-all installs one in target/pyclient).

    target/pyclient/bin/python scripts/mem-churn.py [--bin target/release/bosun] [--seconds 60 | --objects N] [--wait 120]
"""
import argparse, os, subprocess, sys, tempfile, threading, time

def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default="target/release/bosun")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--wait", type=float, default=120)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--objects", type=int, default=0)
    a = p.parse_args()
    from kubernetes import client, config
    data = tempfile.mkdtemp(prefix="bosun-mem-")
    kubeconfig = os.path.join(data, "kubeconfig")
    port = 17000 + os.getpid() % 1000
    server = subprocess.Popen(
        [a.bin, "server", "--data-dir", os.path.join(data, "d"), "--port", str(port),
         "--write-kubeconfig", kubeconfig, "--compaction-interval", "30"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not os.path.exists(kubeconfig):
            if time.time() > deadline or server.poll() is not None:
                sys.exit("bosun server did not start")
            time.sleep(0.05)
        time.sleep(2)
        config.load_kube_config(kubeconfig)
        print(f"start: {rss_mib(server.pid):.0f} MiB")
        created = []
        def worker(i):
            api = client.CoreV1Api()
            names, n, end = [], 0, time.time() + a.seconds
            quota = a.objects // a.clients
            while (n < quota) if quota else (time.time() < end):
                name = f"churn-{i}-{n}"
                n += 1
                try:
                    api.create_namespaced_config_map("default", {"metadata": {"name": name}, "data": {"k": "x" * 1024}})
                    names.append(name)
                except Exception:
                    pass
            for name in names:
                try:
                    api.delete_namespaced_config_map(name, "default")
                except Exception:
                    pass
            created.append(len(names))
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(a.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"after creating and deleting {sum(created)} ConfigMaps: {rss_mib(server.pid):.0f} MiB")
        for k in range(4):
            time.sleep(a.wait / 4)
            print(f"{(k + 1) * a.wait / 4:.0f} s later: {rss_mib(server.pid):.0f} MiB")
    finally:
        server.terminate()
        server.wait()

if __name__ == "__main__":
    main()
