"""The conntrack event monitor on a descriptor numbered above 1023, which select() cannot wait on:
in a user and network namespace of its own (conntrack there follows only that namespace's
connections once a rule of its own uses it), with 1,100 files open first."""

from __future__ import annotations

from helpers import in_own_namespaces

HIGH_DESCRIPTOR = r"""
import json, os, resource, socket, subprocess, threading
from exporter.sources.kernel.conntrack_events import EventMonitor

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(
    ["iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT"], check=True
)
heard, new = [], threading.Event()

def on_events(batch):
    for kind, entry in batch:
        heard.append([kind, entry.dport])
        new.set()

monitor = EventMonitor(on_events, lambda lost: None, lambda: 0.2)
fd = monitor.sock.fileno()
following = threading.Thread(target=monitor.run)
following.start()
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
client = socket.create_connection(server.getsockname())
new.wait(10)
monitor.stop()
following.join(10)
print(json.dumps({"fd": fd, "port": server.getsockname()[1], "heard": heard,
                  "alive": following.is_alive()}))
"""


def test_the_event_monitor_works_on_a_descriptor_select_cannot_wait_on():
    result = in_own_namespaces(HIGH_DESCRIPTOR)
    assert result["fd"] >= 1024
    assert ["new", result["port"]] in result["heard"], result
    assert not result["alive"]
