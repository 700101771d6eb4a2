"""Reaching the machines: the inventory, the ssh transport, the agent program and its sessions."""
