package tools

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// binarySniff is how many leading bytes are checked for NUL to skip binary
// files, as grep does.
const binarySniff = 8000

// maxGrepLine caps one printed line, so a minified file cannot fill the
// output with a single match.
const maxGrepLine = 512

// grepper accumulates grep output across files.
type grepper struct {
	re            *regexp.Regexp
	before, after int
	lineNumbers   bool
	maxMatches    int
	maxOut        int

	out       strings.Builder
	matches   int
	truncated bool
	printed   bool // something was printed: groups after it get a "--"
}

func (g *grepper) full() bool { return g.matches >= g.maxMatches || g.truncated }

func (g *grepper) emit(label string, n int, sep byte, line []byte) {
	if g.out.Len() >= g.maxOut {
		g.truncated = true
		return
	}
	if len(line) > maxGrepLine {
		line = append(line[:maxGrepLine:maxGrepLine], "…"...)
	}
	if label != "" {
		g.out.WriteString(label)
		g.out.WriteByte(sep)
	}
	if g.lineNumbers {
		g.out.WriteString(strconv.Itoa(n))
		g.out.WriteByte(sep)
	}
	g.out.Write(bytes.TrimRight(line, "\r"))
	g.out.WriteByte('\n')
}

// search scans the lines of data; label prefixes every printed line (the
// file path, or "" for text). It reports whether anything matched.
func (g *grepper) search(label string, data []byte) bool {
	lines := bytes.Split(data, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	last := -1     // index of the last printed line of this file
	afterLeft := 0 // context lines still owed after a match
	found := false
	for i, line := range lines {
		if g.truncated {
			break
		}
		if g.matches >= g.maxMatches {
			if afterLeft == 0 {
				break
			}
		} else if g.re.Match(line) {
			found = true
			start := max(i-g.before, last+1)
			if (g.before > 0 || g.after > 0) && g.printed && (last < 0 || start > last+1) {
				g.out.WriteString("--\n")
			}
			for j := start; j < i; j++ {
				g.emit(label, j+1, '-', lines[j])
			}
			g.emit(label, i+1, ':', line)
			g.matches++
			g.printed = true
			last = i
			afterLeft = g.after
			continue
		}
		if afterLeft > 0 {
			g.emit(label, i+1, '-', line)
			afterLeft--
			last = i
		}
	}
	return found
}

func (e *Executor) grep(ctx context.Context, s *session, p params) (string, contract.Map, error) {
	pattern, err := p.required("pattern", "regex", "query")
	if err != nil {
		return "", nil, err
	}
	ignoreCase, err := p.boolean(false, "ignore_case", "case_insensitive")
	if err != nil {
		return "", nil, err
	}
	lineNumbers, err := p.boolean(true, "line_numbers")
	if err != nil {
		return "", nil, err
	}
	recursive, err := p.boolean(false, "recursive")
	if err != nil {
		return "", nil, err
	}
	maxMatches, err := p.integer(DefaultGrepMatches, "max_matches", "max_results")
	if err != nil {
		return "", nil, err
	}
	before, err := p.integer(0, "context_before", "before_context")
	if err != nil {
		return "", nil, err
	}
	after, err := p.integer(0, "context_after", "after_context")
	if err != nil {
		return "", nil, err
	}
	if before < 0 || after < 0 || maxMatches < 0 {
		return "", nil, fmt.Errorf("%w: max_matches, context_before and context_after must not be negative", ErrInvalidParameter)
	}
	exts, err := p.list("file_extensions", "extensions")
	if err != nil {
		return "", nil, err
	}
	for i, x := range exts {
		exts[i] = "." + strings.TrimPrefix(strings.ToLower(x), ".")
	}
	expr := pattern
	if ignoreCase {
		expr = "(?i)" + expr
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return "", nil, fmt.Errorf("%w: pattern: %v", ErrInvalidParameter, err)
	}
	g := &grepper{re: re, lineNumbers: lineNumbers,
		before: min(before, e.cfg.MaxContextLines), after: min(after, e.cfg.MaxContextLines),
		maxMatches: min(max(maxMatches, 1), e.cfg.MaxGrepMatches), maxOut: e.cfg.MaxOutputBytes}
	if maxMatches == 0 {
		g.maxMatches = min(DefaultGrepMatches, e.cfg.MaxGrepMatches)
	}

	meta := contract.Map{"pattern": pattern}
	result := func() (string, contract.Map, error) {
		meta["matches"] = g.matches
		meta["truncated"] = g.truncated
		meta["max_matches_reached"] = g.matches >= g.maxMatches
		out := g.out.String()
		if g.matches == 0 {
			out = "No matches found."
		} else if g.truncated {
			out += "[output truncated]\n"
		}
		return out, meta, nil
	}

	// With text, the search is over that text and no file is touched.
	if text, ok, err := p.str("text", "content", "input"); err != nil {
		return "", nil, err
	} else if ok {
		if int64(len(text)) > e.cfg.MaxReadBytes {
			return "", nil, fmt.Errorf("%w: text is %d bytes; the limit is %d", ErrTooLarge, len(text), e.cfg.MaxReadBytes)
		}
		g.search("", []byte(text))
		return result()
	}

	name, _, err := p.str("file_path", "path", "directory")
	if err != nil {
		return "", nil, err
	}
	if name == "" {
		name = "."
	}
	rel, err := e.sb.path(s, name)
	if err != nil {
		return "", nil, err
	}
	fsys := s.root.FS()
	start := filepath.ToSlash(rel)
	st, err := fs.Stat(fsys, start)
	if err != nil {
		return "", nil, fileError("grep", name, err)
	}
	filesSearched, filesMatched, skippedLarge, skippedBinary := 0, 0, 0, 0
	searchFile := func(p string, size int64) error {
		if size > e.cfg.MaxReadBytes {
			skippedLarge++
			return nil
		}
		data, err := readLimited(s.root, p, e.cfg.MaxReadBytes)
		if errors.Is(err, ErrTooLarge) {
			skippedLarge++
			return nil
		}
		if err != nil {
			return err
		}
		filesSearched++
		if bytes.IndexByte(data[:min(len(data), binarySniff)], 0) >= 0 {
			skippedBinary++
			return nil
		}
		if g.search(p, data) {
			filesMatched++
		}
		return nil
	}

	if !st.IsDir() {
		if !st.Mode().IsRegular() {
			return "", nil, fmt.Errorf("grep %q: not a regular file", name)
		}
		if err := searchFile(start, st.Size()); err != nil {
			return "", nil, fileError("grep", name, err)
		}
	} else {
		opened := 0
		err = fs.WalkDir(fsys, start, func(p string, d fs.DirEntry, err error) error {
			if cerr := ctx.Err(); cerr != nil {
				return cerr
			}
			if err != nil {
				if p == start {
					return err
				}
				return nil // unreadable entries are skipped, as grep -s does
			}
			if d.IsDir() {
				if p != start && !recursive {
					return fs.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() {
				return nil // links, devices, FIFOs: never followed or opened
			}
			if len(exts) > 0 && !hasExt(p, exts) {
				return nil
			}
			if g.full() {
				return fs.SkipAll
			}
			if opened >= e.cfg.MaxGrepFiles {
				g.truncated = true
				meta["files_limit_reached"] = true
				return fs.SkipAll
			}
			opened++
			info, err := d.Info()
			if err != nil {
				return nil
			}
			if err := searchFile(p, info.Size()); err != nil {
				return nil
			}
			return nil
		})
		if err != nil {
			return "", nil, fileError("grep", name, err)
		}
	}
	meta["files_searched"] = filesSearched
	meta["files_matched"] = filesMatched
	meta["skipped_large"] = skippedLarge
	meta["skipped_binary"] = skippedBinary
	return result()
}

func hasExt(p string, exts []string) bool {
	x := strings.ToLower(filepath.Ext(p))
	for _, e := range exts {
		if x == e {
			return true
		}
	}
	return false
}

// readLimited reads a regular file beneath root, failing with ErrTooLarge
// beyond limit. O_NONBLOCK keeps a FIFO swapped in after the walk from
// hanging the call.
func readLimited(root *os.Root, name string, limit int64) ([]byte, error) {
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, ErrTooLarge
	}
	return data, nil
}
