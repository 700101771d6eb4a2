"""The Ansible side: jobs found by their files, and every playbook run started, gated and tracked."""
