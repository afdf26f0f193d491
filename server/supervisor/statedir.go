package supervisor

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/xlbproxy/xlb/dataplane/shm"
	"github.com/xlbproxy/xlb/internal/dirlock"
)

// regionFile and lockFile are the names of the state directory's files. The region file is a copy
// of the region, which the processes map as sealed memory (region.go).
const (
	regionFile = "region"
	lockFile   = "lock"
)

// DefaultStateDirDoc is how help describes the default of --state-dir.
const DefaultStateDirDoc = "$STATE_DIRECTORY, else /var/lib/xlb for root, else $XDG_STATE_HOME/xlb or ~/.local/state/xlb"

// defaultStateDir is the state directory when none is given: systemd's StateDirectory= (which it
// passes as $STATE_DIRECTORY), else the system's place for root, else the user's.
func defaultStateDir() (string, error) {
	if d, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":"); d != "" {
		return d, nil
	}
	if os.Geteuid() == 0 {
		return "/var/lib/xlb", nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "xlb"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no state directory: give --state-dir (%v)", err)
	}
	return filepath.Join(home, ".local", "state", "xlb"), nil
}

// stateDir is a state directory that this process holds: its lock is taken, so no other supervisor
// writes the same region.
type stateDir struct {
	path string
	lock *os.File
}

// lockStateDir creates dir (mode 0700) if missing and takes its lock. A directory locked by another
// live supervisor is refused with that supervisor's pid, and so is one that others than its owner
// may write: whoever can write it can replace the region that every worker trusts, or the admin
// socket.
func lockStateDir(dir string) (*stateDir, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if m := fi.Mode().Perm(); m&0o022 != 0 {
		return nil, fmt.Errorf("state directory %s is writable by its group or by everyone (mode %04o), so another user could "+
			"replace its region or its sockets: chmod go-w %s, or give another --state-dir", dir, m, dir)
	}
	f, _, err := dirlock.Lock(filepath.Join(dir, lockFile))
	var held *dirlock.HeldError
	if errors.As(err, &held) {
		return nil, fmt.Errorf("state directory %s is in use by another xlb (pid %s); give each its own --state-dir", dir, held.PID)
	}
	if err != nil {
		return nil, fmt.Errorf("state directory: lock: %w", err)
	}
	dirlock.Write(f) // the pid is for the refusal's message only: the flock is the lock
	return &stateDir{path: dir, lock: f}, nil
}

// openRegion makes the supervisor's region: sealed memory (shm.New), which no truncation can
// reach, loaded from the directory's region file, or new with caps when there is none, in which
// case the file is written now. The file is a copy, which the supervisor saves again as the region
// changes: the processes map the sealed memory, passed on as a descriptor, never the file. fresh
// says the region is new. A file of a newer layout is refused, never overwritten: it may hold what
// an operator wants back (a downgrade). A file of an older layout (an upgrade across a layout
// change) is moved aside and rebuilt, as a damaged one is. A damaged file (zeroed, truncated, failing its checksums) is moved aside,
// never deleted, and a new region is made: aside is where the damaged file went, and damage what
// was wrong with it; the caller logs them and publishes the sets it knows into the new region.
func (d *stateDir) openRegion(caps shm.Capacities) (r *shm.Region, fresh bool, aside string, damage, err error) {
	path := filepath.Join(d.path, regionFile)
	r, err = shm.Load(path)
	switch {
	case err == nil:
		if damage = r.Verify(); damage == nil {
			return r, false, "", nil, nil
		}
		caps = r.Capacities() // a header that verified: the new region keeps its capacities
		r.Close()
	case errors.Is(err, shm.ErrZeroed) || errors.Is(err, shm.ErrCorrupt) || errors.Is(err, shm.ErrOldLayout):
		// An older layout is not damage, but is handled alike: what it held is in the applied
		// file, and it is kept aside for a downgrade.
		damage = err
	case errors.Is(err, os.ErrNotExist):
		r, err = newRegion(path, caps)
		return r, true, "", nil, err
	case errors.Is(err, shm.ErrLayout):
		return nil, false, "", nil, fmt.Errorf("%w; move the file away to start with an empty region", err)
	default:
		return nil, false, "", nil, err
	}
	if aside, err = moveAside(path); err != nil {
		return nil, false, "", damage, fmt.Errorf("the region file is damaged (%v), and cannot be moved aside: %w", damage, err)
	}
	r, err = newRegion(path, caps)
	return r, true, aside, damage, err
}

// newRegion makes a new sealed region and saves its first copy at path.
func newRegion(path string, caps shm.Capacities) (*shm.Region, error) {
	r, err := shm.New(caps)
	if err != nil {
		return nil, err
	}
	if err := r.Save(path); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// moveAside renames a damaged file to NAME.corrupt-TIMESTAMP beside it, for an operator to look
// at, and returns that name. Nothing deletes these files.
func moveAside(path string) (string, error) {
	aside := asideName(path)
	if err := os.Rename(path, aside); err != nil {
		return "", err
	}
	return aside, nil
}

// asideName is the name a damaged copy of path is kept under.
func asideName(path string) string {
	return path + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000000000Z")
}

// staleDialTimeout bounds the connect that tells whether a socket of a live PID is still served.
const staleDialTimeout = time.Second

// removeStaleSockets removes the unix sockets of dir that a process bound at its own name
// (NAME.sock.PID, and NAME.sock.PID.link while it published one; see rpc.UnixListener) and that no
// process serves any more: one killed by SIGKILL leaves its socket files behind. A socket is stale
// when no process has its PID (kill(PID, 0) fails with ESRCH), or when a connect to it is refused
// (ECONNREFUSED): a process that got the PID since does not listen there. Anything else (a
// connect that succeeds or fails otherwise, a file that is not a socket) is kept. Each removal is
// logged. The supervisor calls it at start, holding the directory's lock; the sockets of a running
// supervisor (the old one of an upgrade, still draining) answer, and stay.
func removeStaleSockets(dir string, log hclog.Logger) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		log.Warn("cannot look for stale sockets in the state directory", "dir", dir, "error", err)
		return
	}
	for _, e := range ents {
		pid, ok := stagedPID(e.Name())
		if !ok || pid == os.Getpid() || e.Type()&fs.ModeSocket == 0 {
			continue
		}
		path := filepath.Join(dir, e.Name())
		why := staleSocket(path, pid, func(pid int) error { return unix.Kill(pid, 0) }, func(path string) error {
			c, err := net.DialTimeout("unix", path, staleDialTimeout)
			if err == nil {
				c.Close()
			}
			return err
		})
		if why == "" {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.Warn("cannot remove a stale socket", "path", path, "error", err)
			continue
		}
		log.Info("removed a stale socket", "path", path, "pid", pid, "reason", why)
	}
}

// staleSocket says why the socket at path, bound by process pid, is stale, or "" when it may be
// in use. alive is kill(pid, 0); dial connects to the socket.
func staleSocket(path string, pid int, alive func(int) error, dial func(string) error) string {
	if err := alive(pid); errors.Is(err, unix.ESRCH) {
		return fmt.Sprintf("no process %d", pid)
	}
	if err := dial(path); errors.Is(err, unix.ECONNREFUSED) {
		return fmt.Sprintf("process %d does not listen on it (the PID was given to another process)", pid)
	}
	return ""
}

// stagedPID is the PID of a name that rpc.StagedName makes, NAME.sock.PID, or of its NAME.sock.PID.link
// (rpc.UnixListener.Publish); ok is false for any other name.
func stagedPID(name string) (pid int, ok bool) {
	name = strings.TrimSuffix(name, ".link")
	i := strings.LastIndexByte(name, '.')
	if i < 0 || !strings.HasSuffix(name[:i], ".sock") || len(name[:i]) == len(".sock") {
		return 0, false
	}
	digits := name[i+1:]
	if digits == "" || strings.TrimLeft(digits, "0123456789") != "" || digits[0] == '0' {
		return 0, false
	}
	pid, err := strconv.Atoi(digits)
	if err != nil {
		return 0, false
	}
	return pid, true
}
