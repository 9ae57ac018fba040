package agents

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// sseEvent is one server-sent event.
type sseEvent struct {
	Event string // "" = message
	Data  string // data lines joined with "\n"
}

// sseReader parses a text/event-stream (the WHATWG format): "field: value"
// lines, an empty line ends an event, several data lines are joined with
// "\n", lines starting with ':' are comments (keep-alives), and events
// without data are skipped. Lines end with LF or CRLF.
type sseReader struct {
	r       *bufio.Reader
	maxLine int
}

func newSSEReader(r io.Reader, maxLine int) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, 32<<10), maxLine: maxLine}
}

// errLineTooLong: a line exceeds the limit (a broken or hostile server).
var errLineTooLong = errors.New("server-sent event line too long")

// readLine returns one line without its terminator. At the end of the
// stream it returns the last unterminated line (if any) with io.EOF.
func (s *sseReader) readLine() (string, error) {
	var buf []byte
	for {
		chunk, err := s.r.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > s.maxLine {
			return "", errLineTooLong
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		line := strings.TrimSuffix(strings.TrimSuffix(string(buf), "\n"), "\r")
		if err != nil {
			return line, err
		}
		return line, nil
	}
}

// next returns the next event with data. At the end of the stream it
// returns io.EOF — after dispatching an event that was not followed by
// its blank line, since some servers close right after the last data line.
func (s *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	var data []string
	for {
		line, err := s.readLine()
		if err != nil && !errors.Is(err, io.EOF) {
			return sseEvent{}, err
		}
		eof := err != nil
		switch {
		case line == "":
			if len(data) > 0 {
				ev.Data = strings.Join(data, "\n")
				return ev, nil
			}
			ev = sseEvent{}
		case line[0] == ':':
			// comment
		default:
			name, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch name {
			case "data":
				data = append(data, value)
			case "event":
				ev.Event = value
			}
		}
		if eof {
			if len(data) > 0 {
				ev.Data = strings.Join(data, "\n")
				return ev, nil
			}
			return sseEvent{}, io.EOF
		}
	}
}

func (e sseEvent) String() string { return fmt.Sprintf("event %q data %q", e.Event, e.Data) }
