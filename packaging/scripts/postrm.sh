#!/bin/sh
# After removal. deb: purge removes the cache, the state and the user.
# rpm ($1 = 0 on erase) keeps the cache, as rpm has no purge.
set -e
if [ "$1" = purge ]; then
	rm -rf /var/cache/warren /var/lib/warren /etc/warren
	if getent passwd warren >/dev/null; then
		deluser --quiet --system warren 2>/dev/null || userdel warren 2>/dev/null || true
	fi
fi
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || true
fi
exit 0
