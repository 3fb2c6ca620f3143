#!/usr/bin/env bash
# Prepares this machine for `ray up ray_cluster.local.yaml` (the on-prem `local` provider over SSH to 127.0.0.1):
#   - Debian's openssh-server and rsync, sshd running on 127.0.0.1:22;
#   - a throw-away key ~/.ssh/shapetune_local, authorised for this user only from 127.0.0.1;
#   - ~/shapetune-venv -> this checkout's .venv, and that venv's bin/ first on PATH in SSH sessions (Ray's
#     launcher runs `ray start` / `ray stop` through `bash --login -i`, which reads ~/.bashrc).
# Idempotent. Run by tests/tuning/test_ray_up.py (through `make test`); safe to run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

if ! command -v sshd >/dev/null && [ ! -x /usr/sbin/sshd ] || ! command -v rsync >/dev/null; then
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server openssh-client rsync
fi
$SUDO mkdir -p /run/sshd
if ! pgrep -x sshd >/dev/null; then
  $SUDO /usr/sbin/sshd -o ListenAddress=127.0.0.1
fi

mkdir -p ~/.ssh && chmod 700 ~/.ssh
[ -f ~/.ssh/shapetune_local ] || ssh-keygen -q -t ed25519 -N "" -C shapetune-local -f ~/.ssh/shapetune_local
pub="from=\"127.0.0.1\" $(cat ~/.ssh/shapetune_local.pub)"
touch ~/.ssh/authorized_keys && chmod 600 ~/.ssh/authorized_keys
grep -qF "$(cut -d' ' -f2 ~/.ssh/shapetune_local.pub)" ~/.ssh/authorized_keys || echo "$pub" >> ~/.ssh/authorized_keys
ssh-keygen -R 127.0.0.1 >/dev/null 2>&1 || true

ln -sfn "$(pwd)/.venv" ~/shapetune-venv
line='export PATH="$HOME/shapetune-venv/bin:$PATH"  # shapetune local cluster (.ci/local_cluster.sh)'
touch ~/.bashrc
grep -qF "shapetune local cluster" ~/.bashrc || echo "$line" >> ~/.bashrc

ssh -i ~/.ssh/shapetune_local -o StrictHostKeyChecking=no -o BatchMode=yes "$(id -un)@127.0.0.1" \
  'bash --login -i -c "command -v ray"' 2>/dev/null | tail -1
