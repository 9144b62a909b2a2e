#!/usr/bin/env python3
"""Writes seeds made by the Python peers' own formatters, for the state_files and timefmt targets.

Run by scripts/capture-corpus.sh, once; the output is checked in.
  - state_files: `runtime_vnics.json` and `data/clients.json` exactly as the Python agent writes
    them (`json.dump(obj, f, indent=2)` / `indent=4`), with the vNIC shapes it persists (spec
    upstream-head §12: MACVLAN DHCP, Wi-Fi proxy ARP, the 3d2c700 generation). Mode byte 0 / 1.
  - timefmt: what Python's `datetime.isoformat()` writes (the cloud is Python), a few hand-picked
    ISO 8601 forms, and the period strings of `get_consumption_*`.

Usage: capture-python-formats.py --out fuzz/seeds
"""

import argparse
import datetime
import json
import os

VNICS = {
    "plc-01": [
        {"name": "eth0", "parent_interface": "enp3s0", "network_mode": "dhcp", "ip": None, "subnet": None,
         "gateway": None, "dns": None, "mac": None, "_interface_type": "ethernet", "_is_wifi": False,
         "_network_method": "macvlan", "mac_address": "3e:9a:12:00:ab:cd",
         "docker_network_name": "macvlan_enp3s0_192.168.1.0_24", "dhcp_ip": "192.168.1.77",
         "dhcp_gateway": "192.168.1.1", "dhcp_dns": "192.168.1.1 8.8.8.8"},
        {"name": "wlan", "parent_interface": "wlan0", "network_mode": "static", "ip": "192.168.50.40/24",
         "subnet": "255.255.255.0", "gateway": "192.168.50.1", "dns": ["1.1.1.1"], "mac": None,
         "_interface_type": "wifi", "_is_wifi": True, "_network_method": "proxy_arp",
         "_proxy_arp_config": {"veth_host": "veth-plc-01", "veth_container": "eth1",
                               "ip_address": "192.168.50.40", "gateway": "192.168.50.1",
                               "parent_interface": "wlan0"}},
    ],
    "plc-légacy": [
        {"name": "vnic0", "parent_interface": "eth0", "parent_subnet": "192.0.2.0/24",
         "parent_gateway": "192.0.2.1", "network_mode": "manual", "ip_address": "192.0.2.50",
         "subnet": "192.0.2.0/24", "gateway": "192.0.2.1", "dns": ["192.0.2.53"],
         "mac_address": "02:42:c0:00:02:32", "docker_network_name": "macvlan_eth0_192.0.2.0_24"},
    ],
}
CLIENTS = {
    "plc-01": {"ip": "172.30.0.2", "name": "plc-01"},
    "plc-légacy": {"ip": "172.30.1.2", "name": "plc-légacy"},
    "plc-half-created": {"ip": "", "name": "plc-half-created"},
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    d = os.path.join(args.out, "state_files")
    os.makedirs(d, exist_ok=True)
    for name, mode, obj, indent in (("runtime_vnics.json", 0, VNICS, 2), ("clients.json", 1, CLIENTS, 4),
                                    ("runtime_vnics-empty.json", 0, {}, 2)):
        with open(os.path.join(d, name), "w") as f:
            f.write(chr(mode))
            json.dump(obj, f, indent=indent)

    d = os.path.join(args.out, "timefmt")
    os.makedirs(d, exist_ok=True)
    utc = datetime.timezone.utc
    stamps = [
        datetime.datetime(2025, 11, 20, 20, 30, 45, 123456, tzinfo=utc).isoformat(),
        datetime.datetime(2025, 11, 20, 20, 30, 45, tzinfo=datetime.timezone(datetime.timedelta(hours=-3, minutes=-30))).isoformat(),
        datetime.datetime(2024, 2, 29, 0, 0).isoformat(),
        datetime.date(2025, 1, 1).isoformat(),
        datetime.datetime(2025, 11, 20, 20, 30, 45, 123456, tzinfo=utc).isoformat().replace("+00:00", "Z"),
        "2025-W47-4T203045,5-0330", "2025324T20Z", "20251120T2030+0100", "2020-12-31 23:59:59.999999999+14:00",
        "1h", "30m", "7d", "3600", " +1_000 ", "1700000000,1700003600", "-5,5,9",
    ]
    for i, s in enumerate(stamps):
        with open(os.path.join(d, f"python-{i:02d}"), "w") as f:
            f.write(s)


if __name__ == "__main__":
    main()
