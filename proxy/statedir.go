package proxy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// stateDirMode is the mode a managed proxy's state directory is created
// with: only scrimp's user may list or change it. Its configuration is
// what the proxy runs, so whoever can write there controls the traffic.
const stateDirMode fs.FileMode = 0o700

// traverseMode lets others through a directory without listing or
// changing it. A managed nginx started by root runs its workers as
// "nobody", and they must reach their temp directories under the state
// directory (tmp/proxy, tmp/client_body): with 0700 nginx cuts off every
// response it has to buffer to disk.
const traverseMode fs.FileMode = 0o711

// prepareStateDir creates dir (and missing parents) with mode, or checks
// the directory that exists: one that group or others can write is
// refused, with the fix. An existing directory's mode is not changed.
func prepareStateDir(dir string, mode fs.FileMode) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, mode); err != nil {
			return fmt.Errorf("proxy: state dir: %w", err)
		}
		// MkdirAll applies the umask, which can only take permissions
		// away; set the mode exactly so traverseMode survives a 077 one.
		if err := os.Chmod(dir, mode); err != nil {
			return fmt.Errorf("proxy: state dir: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("proxy: state dir: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("proxy: state dir %s is not a directory (mode %s)", dir, fi.Mode())
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("proxy: state dir %s has mode %04o: group or others can write it, and so replace the proxy's configuration; fix it with: chmod 700 %s",
			dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// nginxStateDirMode is the mode for a managed nginx's state directory
// and its tmp directory: traverseMode when nginx will run its workers
// as another user (scrimp runs as root), else stateDirMode.
func nginxStateDirMode() fs.FileMode {
	if os.Geteuid() == 0 {
		return traverseMode
	}
	return stateDirMode
}
