#!/bin/sh
# Read-only checks of the folder_sync job on the target (run by roles/folder_sync/tasks/validate.yml
# with the script module: as the user Ansible becomes there, the user rsync runs as).
# Usage: folder_sync_target_check.sh HOST TARGET_FOLDER...
# Prints one line per problem (naming it and the fix) and exits 0. Changes nothing.
host=$1
shift
command -v rsync >/dev/null 2>&1 || echo "rsync is missing on the target $host: install rsync there"
for t in "$@"; do
  t=${t%/}
  t=${t:-/}
  if [ -e "$t" ]; then
    [ -d "$t" ] || { echo "target $t on $host is not a directory: move it away or set another target"; continue; }
    [ -w "$t" ] || echo "target folder $t on $host is not writable by $(id -un): run as root or set ansible_become"
  else
    p=$(dirname "$t")
    [ -d "$p" ] || { echo "the parent $p of the target folder $t does not exist on $host: create it"; continue; }
    [ -w "$p" ] || echo "the parent $p of the target folder $t on $host is not writable by $(id -un): run as root or set ansible_become"
  fi
done
exit 0
