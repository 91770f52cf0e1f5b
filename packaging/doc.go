// Package packaging holds how scrimp is installed as a service: the Debian
// package's nfpm configuration and maintainer scripts (make deb), the
// version script, and the tests of those and of the systemd units in
// systemd/. It has no Go API; its tests build, verify and install.
package packaging
