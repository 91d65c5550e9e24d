#!/bin/sh
# Install the real protocol peers the interop tests use, when missing: SIPp (Debian
# sip-tester), baresip, sox (the independent reader of our WAV recordings) and rtpengine
# (Debian rtpengine-daemon: the media interface is also tested against it). Needs root (CI runs as root); a normal user without them sees
# those tests skipped with the reason.
set -eu
need=""
command -v sipp >/dev/null 2>&1 || need="$need sip-tester"
command -v baresip >/dev/null 2>&1 || need="$need baresip"
command -v sox >/dev/null 2>&1 || need="$need sox"
command -v rtpengine >/dev/null 2>&1 || need="$need rtpengine-daemon"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "note: interop peers missing ($need); install them as root or those tests are skipped"
  exit 0
fi
echo "installing interop peers:$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends $need >/dev/null
