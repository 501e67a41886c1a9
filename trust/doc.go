// Package trust checks repository signatures with the keys the machine's
// apt and dnf trust, so that warren learns, preloads, replicates and
// hands its nodes only metadata its publisher signed. It reads which keys
// sign which repository (apt's sources with their Signed-By, and the
// keyrings in trusted.gpg and trusted.gpg.d for the sources without one;
// dnf's repositories with repo_gpgcheck and their file:// gpgkey; more
// repositories the configuration names), and verifies a clearsigned
// InRelease, or a Release with its Release.gpg and a repomd.xml with its
// repomd.xml.asc, with ProtonMail's OpenPGP library. It does no network
// I/O: the door fetches the files and says what they are.
package trust
