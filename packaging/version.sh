#!/bin/sh
# Prints the version `make deb` and `make install` stamp on scrimp, a
# valid Debian version that grows with every commit:
#   on a tag vX.Y.Z          X.Y.Z
#   N commits after it       X.Y.Z+gitN.HASH
#   no tag yet               0.0.0+gitN.HASH (N counts all commits)
#   not a git checkout       the VERSION file's content, or 0.0.0
# "+dirty" is added when the work tree has uncommitted changes.
set -eu
cd "$(dirname "$0")/.."
if ! git rev-parse --git-dir >/dev/null 2>&1; then
	if [ -f VERSION ]; then cat VERSION; else echo 0.0.0; fi
	exit 0
fi
dirty=""
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	dirty="+dirty"
fi
if desc=$(git describe --tags --match 'v[0-9]*' --long 2>/dev/null); then
	# vX.Y.Z-N-gHASH
	hash=${desc##*-g}
	rest=${desc%-g*}
	n=${rest##*-}
	tag=${rest%-*}
	tag=${tag#v}
	if [ "$n" = 0 ]; then
		echo "$tag${dirty}"
	else
		echo "$tag+git$n.$hash${dirty}"
	fi
	exit 0
fi
echo "0.0.0+git$(git rev-list --count HEAD).$(git rev-parse --short HEAD)${dirty}"
