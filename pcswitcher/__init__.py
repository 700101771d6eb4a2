"""pc-switcher: sync one Linux workstation onto another, built on Ansible."""

__version__ = "0.1.0"
