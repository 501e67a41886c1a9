// Package intercept owns https repositories: a CONNECT to a host the site
// CA may sign for is answered by warren itself, with a certificate from
// that CA, and the requests inside the tunnel take the front's request
// story as http ones do (learnt hashes, verified fills, the store, peers
// and hubs); warren fetches from the real host over TLS verified with the
// system's roots. Any other CONNECT stays a tunnel. Hosts whose apt or dnf
// configuration holds credentials are never intercepted (the scan), so
// warren never sees their secrets.
package intercept
