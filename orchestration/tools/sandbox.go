package tools

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Errors of the sandbox and the executor; test with errors.Is.
var (
	// ErrOutsideSandbox: a path escapes the session's working directory (or
	// a working directory escapes Config.Root).
	ErrOutsideSandbox = errors.New("access denied")
	// ErrTooLarge: a file or a content exceeds a configured limit.
	ErrTooLarge = errors.New("too large")
	// ErrBashDisabled: the bash tool was called while Config.EnableBash is
	// false.
	ErrBashDisabled = errors.New("the bash tool is disabled on this server")
	// ErrBlockedCommand: a bash command contains a blocked command.
	ErrBlockedCommand = errors.New("command refused")
	// ErrUnknownTool: no tool has the name.
	ErrUnknownTool = errors.New("unknown tool")
	// ErrInvalidParameter: a parameter is missing or has the wrong type.
	ErrInvalidParameter = errors.New("invalid parameter")
)

// maxLinkHops bounds symbolic link chains, like the kernel's ELOOP limit.
const maxLinkHops = 40

// sandbox confines paths to Config.Root.
type sandbox struct {
	// rootAbs is Root as configured (absolute, cleaned); rootReal is the
	// same directory with symbolic links resolved. Absolute paths may be
	// given in either form.
	rootAbs, rootReal string
	// root is an open handle on rootReal; all file I/O goes through it (or
	// a Root opened beneath it) so that a link swapped in after our checks
	// still cannot escape.
	root *os.Root
}

func newSandbox(root string) (*sandbox, error) {
	if root == "" {
		return nil, errors.New("tools: Config.Root is required")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("tools: sandbox root %q: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("tools: create sandbox root: %w", err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("tools: resolve sandbox root: %w", err)
	}
	r, err := os.OpenRoot(real)
	if err != nil {
		return nil, fmt.Errorf("tools: open sandbox root: %w", err)
	}
	return &sandbox{rootAbs: filepath.Clean(abs), rootReal: real, root: r}, nil
}

// within reports whether p is base or beneath it (both clean and absolute).
func within(base, p string) bool {
	if p == base {
		return true
	}
	if base == string(filepath.Separator) {
		return strings.HasPrefix(p, base)
	}
	return strings.HasPrefix(p, base+string(filepath.Separator))
}

// evalDeepest resolves the symbolic links of p (absolute, clean), which
// need not exist: the deepest existing ancestor is resolved with
// filepath.EvalSymlinks and the missing rest appended. A dangling link on
// the way is followed by hand, because the file a write creates is where
// the link points, not where the link is.
func evalDeepest(p string, hops int) (string, error) {
	var rest []string
	cur := p
	for {
		real, err := filepath.EvalSymlinks(cur)
		if err == nil {
			return filepath.Join(append([]string{real}, rest...)...), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		if fi, lerr := os.Lstat(cur); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
			// cur exists but is a dangling link: continue at its target.
			if hops >= maxLinkHops {
				return "", fmt.Errorf("%s: too many levels of symbolic links", p)
			}
			target, rerr := os.Readlink(cur)
			if rerr != nil {
				return "", rerr
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(cur), target)
			}
			real, err := evalDeepest(filepath.Clean(target), hops+1)
			if err != nil {
				return "", err
			}
			return filepath.Join(append([]string{real}, rest...)...), nil
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p, nil
		}
		rest = append([]string{filepath.Base(cur)}, rest...)
		cur = parent
	}
}

// session is a session's working directory, resolved and opened.
type session struct {
	real string   // absolute path with links resolved
	rel  string   // relative to the sandbox root ("." for the root itself)
	root *os.Root // handle confined to the directory
	own  bool     // root must be closed
}

func (s *session) close() {
	if s.own {
		_ = s.root.Close()
	}
}

// toReal maps an absolute path given in the configured form of Root onto
// its resolved form, so both spellings are accepted.
func (sb *sandbox) toReal(p string) string {
	if sb.rootAbs != sb.rootReal && within(sb.rootAbs, p) && !within(sb.rootReal, p) {
		return filepath.Join(sb.rootReal, strings.TrimPrefix(p, sb.rootAbs))
	}
	return p
}

// confine resolves p against base (an absolute real directory) and checks
// that it stays beneath base, lexically and after resolving links. what
// names base in errors.
func (sb *sandbox) confine(base, p, what string) (string, error) {
	var cand string
	if filepath.IsAbs(p) {
		cand = sb.toReal(filepath.Clean(p))
		if !within(base, cand) {
			return "", fmt.Errorf("%w: %q is outside the %s", ErrOutsideSandbox, p, what)
		}
	} else {
		cand = filepath.Join(base, p)
		if !within(base, cand) {
			return "", fmt.Errorf("%w: %q escapes the %s", ErrOutsideSandbox, p, what)
		}
	}
	real, err := evalDeepest(cand, 0)
	if err != nil {
		return "", fmt.Errorf("resolve %q: %w", p, err)
	}
	if !within(base, real) {
		return "", fmt.Errorf("%w: %q resolves outside the %s through a symbolic link", ErrOutsideSandbox, p, what)
	}
	return real, nil
}

// open resolves a session's working directory (relative to Root) and opens
// it. With create, a missing directory is created; otherwise it must exist.
func (sb *sandbox) open(workingDir string, create bool) (*session, error) {
	real, err := sb.confine(sb.rootReal, workingDir, "sandbox root")
	if err != nil {
		return nil, fmt.Errorf("working directory: %w", err)
	}
	rel, err := filepath.Rel(sb.rootReal, real)
	if err != nil {
		return nil, fmt.Errorf("working directory: %w", err)
	}
	if rel == "." {
		return &session{real: real, rel: rel, root: sb.root}, nil
	}
	if create {
		if err := sb.root.MkdirAll(rel, 0o755); err != nil {
			return nil, fmt.Errorf("create working directory %q: %w", workingDir, err)
		}
	}
	r, err := sb.root.OpenRoot(rel)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("working directory %q does not exist", workingDir)
		}
		return nil, fmt.Errorf("open working directory %q: %w", workingDir, err)
	}
	return &session{real: real, rel: rel, root: r, own: true}, nil
}

// path resolves a tool's path parameter within the session directory and
// returns it relative to the session directory (for I/O through
// session.root), with links resolved.
func (sb *sandbox) path(s *session, p string) (string, error) {
	if strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("%w: path contains a NUL byte", ErrInvalidParameter)
	}
	real, err := sb.confine(s.real, p, "working directory")
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(s.real, real)
	if err != nil {
		return "", err
	}
	return rel, nil
}

// ConfineDir resolves dir — relative to root, or absolute inside it; ""
// is root itself — to an absolute path with symbolic links resolved. It
// fails with ErrOutsideSandbox when dir escapes root (by "..", an absolute
// path or a link). dir need not exist; root must.
func ConfineDir(root, dir string) (string, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return "", fmt.Errorf("tools: sandbox root %q: %w", root, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("tools: resolve sandbox root: %w", err)
	}
	sb := &sandbox{rootAbs: filepath.Clean(abs), rootReal: real}
	return sb.confine(real, dir, "sandbox root")
}
