#!/usr/bin/env python3
"""Run one of Nordic's unchanged provisioning tools against simulated modems.

Nordic's `nrfcredstore` and `device_credentials_installer` only accept a port that pyserial's
port enumeration lists (they look it up in `serial.tools.list_ports.comports()`), and
pseudo-terminals are not listed. This wrapper adds the ports named in the environment
variable NRFCA_SIM_PORTS (separated by ':') to that enumeration and then runs the tool's own
entry point with the remaining arguments. Nothing else is changed: the AT conversation is
the tool's.

    NRFCA_SIM_PORTS=/dev/pts/3 python run_nordic.py nrfcredstore /dev/pts/3 list
    NRFCA_SIM_PORTS=/dev/pts/3 python run_nordic.py device_credentials_installer --port /dev/pts/3 ...
"""
import os
import sys

import serial.tools.list_ports as list_ports
from serial.tools.list_ports_common import ListPortInfo

_real_comports = list_ports.comports


def _comports(*args, **kwargs):
    ports = list(_real_comports(*args, **kwargs))
    for p in filter(None, os.environ.get("NRFCA_SIM_PORTS", "").split(":")):
        info = ListPortInfo(os.path.realpath(p))
        info.description = "nrfca simulated nRF91 modem"
        info.hwid = "nrfca-sim"
        ports.append(info)
    return ports


list_ports.comports = _comports


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: run_nordic.py nrfcredstore|device_credentials_installer ARGS...")
    tool, args = sys.argv[1], sys.argv[2:]
    if tool == "nrfcredstore":
        from nrfcredstore import cli

        cli.run([tool] + args)
    elif tool == "device_credentials_installer":
        from nrfcloud_utils import device_credentials_installer

        device_credentials_installer.main(args)
    else:
        sys.exit(f"unknown tool {tool}")


if __name__ == "__main__":
    main()
