#!/bin/sh
# After install or upgrade: the warren user and its directories; systemd only
# when it runs (containers and CI have none, and that is fine).
set -e
if ! getent passwd warren >/dev/null; then
	if command -v adduser >/dev/null 2>&1 && adduser --help 2>&1 | grep -q -- --system; then
		adduser --system --group --home /var/cache/warren --no-create-home --quiet warren
	else
		useradd --system --user-group --home-dir /var/cache/warren --no-create-home --shell /usr/sbin/nologin warren
	fi
fi
for d in /var/cache/warren /var/lib/warren; do
	mkdir -p "$d"
	chown -R warren:warren "$d"
	chmod 0750 "$d"
done
# The config may hold tokens: root writes it, the daemon reads it through
# its group, nobody else reads it; again on every upgrade (a conffile dpkg
# replaces comes unpacked as root:root).
if [ -f /etc/warren/warren.yaml ]; then
	chown root:warren /etc/warren/warren.yaml
	chmod 0640 /etc/warren/warren.yaml
fi
# With a site CA (warren ca init or ca install), apt trusts it for the
# intercepted https hosts: what a rotation or an upgrade needs too.
if [ -e /var/cache/warren/ca/site-ca.crt ] && [ -d /etc/apt/apt.conf.d ]; then
	/usr/bin/warren apt-setup --config /etc/warren/warren.yaml || true
fi
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || true
	systemctl enable warren.service || true
	systemctl restart warren.service || true
fi
exit 0
