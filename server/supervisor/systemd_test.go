package supervisor

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// unitPath is the systemd unit that deploy/ ships.
const unitPath = "../../deploy/xlb.service"

// unitKV is one assignment of a unit file, with its line.
type unitKV struct {
	key, value string
	line       int
}

// unitFile is a parsed systemd unit file: each section's assignments in order (a key may repeat, as
// SystemCallFilter= does).
type unitFile map[string][]unitKV

// parseUnit parses the syntax of systemd.syntax(7) that a unit uses: [Section] headers, Key=Value
// lines, comments starting with # or ;, and lines continued by a trailing backslash. Anything else
// is an error naming its line.
func parseUnit(text string) (unitFile, error) {
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		start := n
		for strings.HasSuffix(line, `\`) && sc.Scan() {
			n++
			line = strings.TrimSpace(strings.TrimSuffix(line, `\`)) + " " + strings.TrimSpace(sc.Text())
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("line %d: section header %q does not end with ]", start, line)
			}
			section = line[1 : len(line)-1]
		default:
			key, value, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				return nil, fmt.Errorf("line %d: %q is not Key=Value in a section", start, line)
			}
			u[section] = append(u[section], unitKV{strings.TrimSpace(key), strings.TrimSpace(value), start})
		}
	}
	return u, sc.Err()
}

// values are every value of key in section, in order.
func (u unitFile) values(section, key string) []string {
	var out []string
	for _, kv := range u[section] {
		if kv.key == key {
			out = append(out, kv.value)
		}
	}
	return out
}

// one is the value of key in section, which the unit must set once.
func (u unitFile) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u.values(section, key)
	if len(v) != 1 {
		t.Errorf("[%s] %s= is set %d times (%q), want once", section, key, len(v), v)
		return ""
	}
	return v[0]
}

func readUnit(t *testing.T) unitFile {
	t.Helper()
	b, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	u, err := parseUnit(string(b))
	if err != nil {
		t.Fatalf("%s: %v", unitPath, err)
	}
	return u
}

func TestParseUnit(t *testing.T) {
	u, err := parseUnit("# c\n[Service]\n; c\nA=1\nSystemCallFilter=@x\nSystemCallFilter=~@y\nExecStart=/bin/x \\\n  --flag v\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := u.values("Service", "SystemCallFilter"); !slices.Equal(got, []string{"@x", "~@y"}) {
		t.Errorf("repeated key: %q", got)
	}
	if got := u.values("Service", "ExecStart"); !slices.Equal(got, []string{"/bin/x --flag v"}) {
		t.Errorf("continued line: %q", got)
	}
	for _, bad := range []string{"A=1\n", "[Service\n", "[Service]\nnot an assignment\n"} {
		if _, err := parseUnit(bad); err == nil || !strings.Contains(err.Error(), "line ") {
			t.Errorf("parseUnit(%q): %v, want an error naming the line", bad, err)
		}
	}
}

// TestSystemdUnitHardening: deploy/xlb.service runs xlb as its own user with one capability and
// a sandbox, and still lets it do what it needs: notify (from an upgraded supervisor too), keep its
// state directory in a mode xlb accepts, and write its pid file where the unit says.
func TestSystemdUnitHardening(t *testing.T) {
	u := readUnit(t)
	const svc = "Service"
	want := map[string]string{
		"User":                    "xlb",
		"Group":                   "xlb",
		"CapabilityBoundingSet":   "CAP_NET_BIND_SERVICE",
		"AmbientCapabilities":     "CAP_NET_BIND_SERVICE",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"PrivateMounts":           "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectKernelLogs":       "yes",
		"ProtectControlGroups":    "yes",
		"ProtectClock":            "yes",
		"ProtectHostname":         "yes",
		"ProtectProc":             "invisible",
		"RestrictNamespaces":      "yes",
		"RestrictRealtime":        "yes",
		"RestrictSUIDSGID":        "yes",
		"LockPersonality":         "yes",
		"MemoryDenyWriteExecute":  "yes",
		"RemoveIPC":               "yes",
		"SystemCallArchitectures": "native",
		"SystemCallErrorNumber":   "EPERM",
		"UMask":                   "0077",
		"StateDirectory":          "xlb",
		"RuntimeDirectory":        "xlb",
		"LogsDirectory":           "xlb",
		// What xlb needs: Type=notify is how systemd learns it serves (sd_notify), and after an
		// upgrade it is another process, the new supervisor, that notifies.
		"Type":         "notify",
		"NotifyAccess": "all",
	}
	for _, key := range slices.Sorted(maps.Keys(want)) {
		if got, v := u.one(t, svc, key), want[key]; got != v {
			t.Errorf("[%s] %s=%s, want %s", svc, key, got, v)
		}
	}
	// AF_UNIX: the state directory's sockets and NOTIFY_SOCKET; AF_INET*: listeners and backends.
	if got := strings.Fields(u.one(t, svc, "RestrictAddressFamilies")); !sameSet(got, []string{"AF_UNIX", "AF_INET", "AF_INET6"}) {
		t.Errorf("RestrictAddressFamilies=%s, want AF_UNIX AF_INET AF_INET6", strings.Join(got, " "))
	}
	if got := u.values(svc, "SystemCallFilter"); len(got) == 0 || got[0] != "@system-service" {
		t.Errorf("SystemCallFilter= %q; want the allow list @system-service first", got)
	}
	for _, key := range []string{"PrivateUsers", "ProcSubset", "DynamicUser", "ReadOnlyPaths", "InaccessiblePaths"} {
		if v := u.values(svc, key); len(v) > 0 {
			t.Errorf("[%s] %s=%q: the unit's comment says why it is left out", svc, key, v)
		}
	}

	// The directories systemd makes: only their owner may write them. xlb refuses a state directory
	// its group or others may write; this is the check it makes, on a directory of that mode.
	for _, key := range []string{"StateDirectoryMode", "RuntimeDirectoryMode", "LogsDirectoryMode"} {
		if got := u.one(t, svc, key); got != "0700" {
			t.Errorf("[%s] %s=%s, want 0700", svc, key, got)
		}
	}
	mode, err := strconv.ParseUint(u.one(t, svc, "StateDirectoryMode"), 8, 32)
	if err != nil {
		t.Fatalf("StateDirectoryMode: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "xlb")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, os.FileMode(mode)); err != nil {
		t.Fatal(err)
	}
	sd, err := lockStateDir(dir)
	if err != nil {
		t.Errorf("a state directory of StateDirectoryMode=%04o is refused: %v", mode, err)
	} else {
		sd.lock.Close()
	}

	// ExecStart: an absolute binary (an upgrade starts that path again), no --state-dir (xlb takes
	// $STATE_DIRECTORY, which StateDirectory= sets), and the pid file in RuntimeDirectory=.
	exec := strings.Fields(u.one(t, svc, "ExecStart"))
	if len(exec) < 2 || !filepath.IsAbs(exec[0]) || exec[1] != "run" {
		t.Fatalf("ExecStart=%s; want an absolute path to xlb, then run", strings.Join(exec, " "))
	}
	if slices.Contains(exec, "--state-dir") {
		t.Errorf("ExecStart gives --state-dir; the state directory is StateDirectory='s")
	}
	pidFile := u.one(t, svc, "PIDFile")
	if i := slices.Index(exec, "--pid-file"); i < 0 || i+1 >= len(exec) || exec[i+1] != pidFile {
		t.Errorf("ExecStart=%s; want --pid-file %s, the PIDFile=", strings.Join(exec, " "), pidFile)
	}
	if want := filepath.Join("/run", u.one(t, svc, "RuntimeDirectory")); filepath.Dir(pidFile) != want {
		t.Errorf("PIDFile=%s is not in the RuntimeDirectory %s", pidFile, want)
	}
	if got := u.one(t, svc, "ExecReload"); !strings.Contains(got, "-USR2 $MAINPID") {
		t.Errorf("ExecReload=%s; want the upgrade, SIGUSR2 to $MAINPID", got)
	}
}

// xlbSyscalls are the system calls xlb makes, seen by strace -f of `xlb run --workers 2` serving a
// request, reloading its file on SIGHUP, and upgrading on SIGUSR2 (Linux amd64, Go 1.26), with
// those of paths that run did not take: inotify_rm_watch (the watch re-armed), setpgid and kill
// (an upgrade's process group), memfd_create (the region's sealed memory), splice and sendfile (the proxy's copies), and the socket calls of
// unix datagrams (sd_notify).
var xlbSyscalls = strings.Fields(`accept4 access arch_prctl bind brk clone clone3 close connect
	dup3 epoll_create1 epoll_ctl epoll_pwait eventfd2 execve exit_group fchmodat fcntl flock fstat
	ftruncate futex getpeername getpid getrandom getsockname getsockopt gettid inotify_add_watch
	inotify_init1 inotify_rm_watch ioctl kill linkat listen madvise memfd_create mmap mprotect munmap nanosleep
	newfstatat openat pidfd_open pidfd_send_signal pipe2 prctl pread64 prlimit64 pwrite64 read
	readlinkat recvfrom recvmsg renameat rseq rt_sigaction rt_sigprocmask rt_sigreturn
	sched_getaffinity sched_yield sendfile sendmsg sendto set_robust_list set_tid_address setpgid
	setsockopt shutdown sigaltstack socket splice statfs tgkill uname unlinkat wait4 waitid write`)

// TestSystemdUnitVerify runs systemd's own checks of the unit where systemd-analyze is installed:
// verify (with ExecStart's binary replaced by one that exists) says nothing, not even a warning
// about an unknown key, and the system call filter allows every call of xlbSyscalls. Without
// systemd-analyze, TestSystemdUnitHardening is the check.
func TestSystemdUnitVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Logf("systemd-analyze is not installed (%v): only TestSystemdUnitHardening checks the unit", err)
		return
	}
	u := readUnit(t)
	b, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	execStart := strings.Fields(u.one(t, "Service", "ExecStart"))
	unit := filepath.Join(t.TempDir(), "xlb.service")
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(string(b), execStart[0]+" ", bin+" ")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unitPath, err, out)
	}

	allowed := map[string]bool{}
	for i, f := range u.values("Service", "SystemCallFilter") {
		deny := strings.HasPrefix(f, "~")
		if i == 0 && deny {
			t.Fatalf("SystemCallFilter=%s first: a deny list; want an allow list", f)
		}
		for _, name := range strings.Fields(strings.TrimPrefix(f, "~")) {
			for call := range syscallGroup(t, analyze, name, map[string]bool{}) {
				allowed[call] = !deny
			}
		}
	}
	for _, call := range xlbSyscalls {
		if !allowed[call] {
			t.Errorf("the unit's SystemCallFilter= does not allow %s, which xlb makes", call)
		}
	}
}

// syscallGroup is the system calls of name: a call, or a group (@name) expanded by systemd-analyze
// syscall-filter, groups within it too.
func syscallGroup(t *testing.T, analyze, name string, seen map[string]bool) map[string]bool {
	t.Helper()
	calls := map[string]bool{}
	if !strings.HasPrefix(name, "@") {
		calls[name] = true
		return calls
	}
	seen[name] = true
	out, err := exec.Command(analyze, "syscall-filter", name).Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter %s: %v", name, err)
	}
	lines := strings.Split(string(out), "\n")
	for _, line := range lines[1:] { // the first names the group
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "@"):
			if !seen[line] {
				for c := range syscallGroup(t, analyze, line, seen) {
					calls[c] = true
				}
			}
		default:
			calls[line] = true
		}
	}
	if len(calls) == 0 {
		t.Fatalf("systemd-analyze syscall-filter %s: no system calls in %q", name, out)
	}
	return calls
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
