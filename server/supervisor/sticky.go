package supervisor

import (
	"path/filepath"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/dataplane/balance/sticky"
)

// stickyKeysFile is the sticky cookie keys file's name in the state directory.
const stickyKeysFile = "sticky-keys"

// stickyKeys returns the keys file of sticky cookies that the workers read, after checking that it
// holds keys: file when the configuration names one (several data planes sharing a key: it must
// exist), else dir/sticky-keys, made with one new key when missing. The caller holds the state
// directory's lock, so that two supervisors never both create it.
func stickyKeys(dir, file string, log hclog.Logger) (string, error) {
	if file != "" {
		if _, err := sticky.LoadKeys(file); err != nil {
			return "", err
		}
		return file, nil
	}
	path := filepath.Join(dir, stickyKeysFile)
	_, created, err := sticky.LoadOrCreateKeys(path)
	if err != nil {
		return "", err
	}
	if created {
		log.Info("made a sticky cookie key; data planes that must accept each other's cookies need the same file (sticky_key_file)", "file", path)
	}
	return path, nil
}
