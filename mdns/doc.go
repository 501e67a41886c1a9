// Package mdns announces this warren on the LAN and finds the others, with
// grandcat/zeroconf: _warren._tcp for peers (its TXT record carries node id,
// priority, role and protocol version) and _apt_proxy._tcp for apt's
// auto-detect clients (squid-deb-proxy-client, auto-apt-proxy). What it
// finds it hands to a callback; it knows nothing else.
package mdns
