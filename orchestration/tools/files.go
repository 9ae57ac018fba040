package tools

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// notFound turns a missing-file error into a message without host paths
// (errors from os.Root name the sandbox path, which callers must not see).
func fileError(op, p string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s %q: no such file or directory", op, p)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s %q: permission denied", op, p)
	case errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%s %q: a path component is not a directory", op, p)
	case errors.Is(err, syscall.ELOOP), strings.Contains(err.Error(), "escapes"):
		// os.Root refused a link it resolved itself: the file changed
		// after our check, or the link is absolute.
		return fmt.Errorf("%w: %q is a symbolic link that os.Root refuses", ErrOutsideSandbox, p)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s %q: %w", op, p, pe.Err)
	}
	return fmt.Errorf("%s %q: %w", op, p, err)
}

// decodeText turns file bytes into the tool's text output.
func decodeText(data []byte, encoding string) (string, error) {
	switch strings.ToLower(strings.ReplaceAll(encoding, "_", "-")) {
	case "", "utf-8", "utf8", "ascii", "us-ascii":
		if utf8.Valid(data) {
			return string(data), nil
		}
		return strings.ToValidUTF8(string(data), "\uFFFD"), nil
	case "latin1", "latin-1", "iso-8859-1":
		r := make([]rune, len(data))
		for i, b := range data {
			r[i] = rune(b)
		}
		return string(r), nil
	case "base64":
		return base64.StdEncoding.EncodeToString(data), nil
	}
	return "", fmt.Errorf("%w: unsupported encoding %q (use utf-8, latin1 or base64)", ErrInvalidParameter, encoding)
}

// encodeText turns write_file content into bytes.
func encodeText(content, encoding string) ([]byte, error) {
	switch strings.ToLower(strings.ReplaceAll(encoding, "_", "-")) {
	case "", "utf-8", "utf8", "ascii", "us-ascii":
		return []byte(content), nil
	case "latin1", "latin-1", "iso-8859-1":
		b := make([]byte, 0, len(content))
		for _, r := range content {
			if r > 0xFF {
				return nil, fmt.Errorf("%w: content has %q, which latin1 cannot encode", ErrInvalidParameter, r)
			}
			b = append(b, byte(r))
		}
		return b, nil
	case "base64":
		b, err := base64.StdEncoding.DecodeString(content)
		if err != nil {
			return nil, fmt.Errorf("%w: content is not valid base64: %v", ErrInvalidParameter, err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("%w: unsupported encoding %q (use utf-8, latin1 or base64)", ErrInvalidParameter, encoding)
}

func lineCount(s string) int {
	if s == "" {
		return 0
	}
	n := strings.Count(s, "\n")
	if !strings.HasSuffix(s, "\n") {
		n++
	}
	return n
}

// displayPath is how a path relative to the session directory is shown:
// slash-separated, "." for the directory itself.
func displayPath(rel string) string { return filepath.ToSlash(rel) }

func (e *Executor) readFile(ctx context.Context, s *session, p params) (string, contract.Map, error) {
	name, err := p.required("file_path", "path", "filename")
	if err != nil {
		return "", nil, err
	}
	enc, _, err := p.str("encoding")
	if err != nil {
		return "", nil, err
	}
	rel, err := e.sb.path(s, name)
	if err != nil {
		return "", nil, err
	}
	// O_NONBLOCK: opening a FIFO must not hang the call; it is refused
	// below as not a regular file.
	f, err := s.root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", nil, fileError("read", name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", nil, fileError("read", name, err)
	}
	if st.IsDir() {
		return "", nil, fmt.Errorf("read %q: is a directory (use list_files)", name)
	}
	if !st.Mode().IsRegular() {
		return "", nil, fmt.Errorf("read %q: not a regular file", name)
	}
	limit := e.cfg.MaxReadBytes
	if st.Size() > limit {
		return "", nil, fmt.Errorf("%w: %q is %d bytes; the read limit is %d bytes", ErrTooLarge, name, st.Size(), limit)
	}
	if err := ctx.Err(); err != nil {
		return "", nil, err
	}
	// The limit is enforced again on the bytes read: the file may grow
	// between Stat and ReadAll.
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return "", nil, fileError("read", name, err)
	}
	if int64(len(data)) > limit {
		return "", nil, fmt.Errorf("%w: %q is larger than the read limit of %d bytes", ErrTooLarge, name, limit)
	}
	text, err := decodeText(data, enc)
	if err != nil {
		return "", nil, err
	}
	return text, contract.Map{
		"file_path":     displayPath(rel),
		"file_size":     len(data),
		"last_modified": contract.NewDateTime(st.ModTime().UTC()),
		"line_count":    lineCount(string(data)),
		"encoding":      strings.ToLower(cmpOr(enc, "utf-8")),
	}, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (e *Executor) writeFile(ctx context.Context, s *session, p params) (string, contract.Map, error) {
	name, err := p.required("file_path", "path", "filename")
	if err != nil {
		return "", nil, err
	}
	content, ok, err := p.str("content", "text", "data")
	if err != nil {
		return "", nil, err
	}
	if !ok {
		return "", nil, fmt.Errorf("%w: content is required", ErrInvalidParameter)
	}
	appendMode, err := p.boolean(false, "append")
	if err != nil {
		return "", nil, err
	}
	createDir, err := p.boolean(true, "create_directory", "create_directories", "create_dirs")
	if err != nil {
		return "", nil, err
	}
	enc, _, err := p.str("encoding")
	if err != nil {
		return "", nil, err
	}
	if int64(len(content)) > e.cfg.MaxWriteBytes*2 {
		// Cheap early refusal before decoding a huge value.
		return "", nil, fmt.Errorf("%w: content is %d bytes; the write limit is %d bytes", ErrTooLarge, len(content), e.cfg.MaxWriteBytes)
	}
	data, err := encodeText(content, enc)
	if err != nil {
		return "", nil, err
	}
	if int64(len(data)) > e.cfg.MaxWriteBytes {
		return "", nil, fmt.Errorf("%w: content is %d bytes; the write limit is %d bytes", ErrTooLarge, len(data), e.cfg.MaxWriteBytes)
	}
	// The target is resolved like any path, so a link (even a dangling one)
	// pointing outside is refused before anything is created.
	rel, err := e.sb.path(s, name)
	if err != nil {
		return "", nil, err
	}
	if rel == "." {
		return "", nil, fmt.Errorf("write %q: is a directory", name)
	}
	if err := ctx.Err(); err != nil {
		return "", nil, err
	}

	createdDir := false
	parent := filepath.Dir(rel)
	if _, err := s.root.Stat(parent); errors.Is(err, fs.ErrNotExist) {
		if !createDir {
			return "", nil, fmt.Errorf("write %q: directory %q does not exist (set create_directory)", name, displayPath(parent))
		}
		if err := s.root.MkdirAll(parent, 0o755); err != nil {
			return "", nil, fileError("create directory for", name, err)
		}
		createdDir = true
	} else if err != nil {
		return "", nil, fileError("write", name, err)
	}

	existing, statErr := s.root.Stat(rel)
	exists := statErr == nil
	if exists && existing.IsDir() {
		return "", nil, fmt.Errorf("write %q: is a directory", name)
	}
	if exists && !existing.Mode().IsRegular() {
		return "", nil, fmt.Errorf("write %q: not a regular file", name)
	}

	op := "create"
	if appendMode {
		if exists {
			op = "append"
		}
		f, err := s.root.OpenFile(rel, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NONBLOCK, 0o644)
		if err != nil {
			return "", nil, fileError("write", name, err)
		}
		_, werr := f.Write(data)
		cerr := f.Close()
		if err := errors.Join(werr, cerr); err != nil {
			return "", nil, fileError("write", name, err)
		}
	} else {
		if exists {
			op = "overwrite"
		}
		if err := replaceFile(s.root, rel, data, existing); err != nil {
			return "", nil, fileError("write", name, err)
		}
	}
	size := int64(len(data))
	if st, err := s.root.Stat(rel); err == nil {
		size = st.Size()
	}
	return fmt.Sprintf("Wrote %d bytes to %s", len(data), displayPath(rel)), contract.Map{
		"file_path":         displayPath(rel),
		"file_size":         size,
		"bytes_written":     len(data),
		"operation":         op,
		"created_directory": createdDir,
	}, nil
}

// replaceFile writes data to a temporary file next to rel and renames it
// over rel, so readers see the old or the new content, never a part. The
// mode of an existing file is kept.
func replaceFile(root *os.Root, rel string, data []byte, existing fs.FileInfo) error {
	tmp := filepath.Join(filepath.Dir(rel), "."+filepath.Base(rel)+".tmp-"+uuid.NewString()[:8])
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	var merr error
	if existing != nil {
		merr = f.Chmod(existing.Mode().Perm())
	}
	cerr := f.Close()
	if err := errors.Join(werr, merr, cerr); err != nil {
		_ = root.Remove(tmp)
		return err
	}
	if err := root.Rename(tmp, rel); err != nil {
		_ = root.Remove(tmp)
		return err
	}
	return nil
}

func (e *Executor) listFiles(ctx context.Context, s *session, p params) (string, contract.Map, error) {
	name, _, err := p.str("path", "directory", "dir", "file_path")
	if err != nil {
		return "", nil, err
	}
	if name == "" {
		name = "."
	}
	recursive, err := p.boolean(false, "recursive")
	if err != nil {
		return "", nil, err
	}
	pattern, _, err := p.str("pattern", "glob")
	if err != nil {
		return "", nil, err
	}
	if _, err := path.Match(pattern, ""); err != nil {
		return "", nil, fmt.Errorf("%w: pattern %q: %v", ErrInvalidParameter, pattern, err)
	}
	limit, err := p.integer(e.cfg.MaxListEntries, "max_entries", "max_results", "limit")
	if err != nil {
		return "", nil, err
	}
	limit = min(max(limit, 1), e.cfg.MaxListEntries)
	rel, err := e.sb.path(s, name)
	if err != nil {
		return "", nil, err
	}
	st, err := s.root.Stat(rel)
	if err != nil {
		return "", nil, fileError("list", name, err)
	}
	if !st.IsDir() {
		return displayPath(rel), contract.Map{"path": displayPath(rel), "count": 1, "truncated": false, "recursive": recursive}, nil
	}

	var b strings.Builder
	count, truncated, unreadable := 0, false, 0
	start := filepath.ToSlash(rel)
	err = fs.WalkDir(s.root.FS(), start, func(p string, d fs.DirEntry, err error) error {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if err != nil {
			if p == start {
				return err
			}
			unreadable++
			return nil
		}
		if p == start {
			return nil
		}
		if count >= limit {
			truncated = true
			return fs.SkipAll
		}
		if pattern == "" || matchName(pattern, d.Name()) {
			b.WriteString(p)
			if d.IsDir() {
				b.WriteByte('/')
			}
			b.WriteByte('\n')
			count++
		}
		if d.IsDir() && !recursive {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return "", nil, fileError("list", name, err)
	}
	meta := contract.Map{"path": displayPath(rel), "count": count, "truncated": truncated, "recursive": recursive}
	if unreadable > 0 {
		meta["unreadable"] = unreadable
	}
	out := b.String()
	if truncated {
		out += fmt.Sprintf("[listing truncated at %d entries]\n", limit)
	}
	return out, meta, nil
}

func matchName(pattern, name string) bool {
	ok, _ := path.Match(pattern, name)
	return ok
}
