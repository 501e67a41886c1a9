#!/bin/sh
# Before removal (not on upgrade): stop the daemon when systemd runs.
set -e
case "$1" in
	remove|purge|0)
		if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
			systemctl stop warren.service || true
			systemctl disable warren.service || true
		fi
		# apt must not be told to use a helper, or trust a bundle, that go.
		/usr/bin/warren apt-setup --undo --config /etc/warren/warren.yaml >/dev/null 2>&1 || true
		;;
esac
exit 0
