package contract

import (
	"encoding/json"
	"fmt"
	"time"
)

// DateTime is a .NET System.DateTime on the wire: ISO 8601, written in UTC
// with a trailing Z and at most seven fraction digits with trailing zeros
// dropped ("2025-09-01T10:20:30.12Z", "2025-09-01T10:20:30Z"). The zero value
// is written "0001-01-01T00:00:00" (no zone), as .NET writes an unset
// DateTime.
type DateTime time.Time

// NewDateTime converts t.
func NewDateTime(t time.Time) DateTime { return DateTime(t) }

// Time returns the value as a time.Time.
func (d DateTime) Time() time.Time { return time.Time(d) }

// IsZero reports whether the value is unset.
func (d DateTime) IsZero() bool { return time.Time(d).IsZero() }

// dateTimeLayout has seven optional fraction digits: Go drops trailing zeros
// and truncates beyond the seventh, matching .NET's 100 ns ticks.
const dateTimeLayout = "2006-01-02T15:04:05.9999999Z"

// String returns the wire form without quotes.
func (d DateTime) String() string {
	if d.IsZero() {
		return "0001-01-01T00:00:00"
	}
	return time.Time(d).UTC().Format(dateTimeLayout)
}

// MarshalJSON writes the wire form.
func (d DateTime) MarshalJSON() ([]byte, error) {
	if d.IsZero() {
		return []byte(`"0001-01-01T00:00:00"`), nil
	}
	b := make([]byte, 0, len(dateTimeLayout)+2)
	b = append(b, '"')
	b = time.Time(d).UTC().AppendFormat(b, dateTimeLayout)
	return append(b, '"'), nil
}

// UnmarshalJSON reads an ISO 8601 date-time (see [ParseDateTime]); null is
// ignored.
func (d *DateTime) UnmarshalJSON(data []byte) error {
	if isNull(data) {
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("contract: DateTime must be an ISO 8601 string: %w", err)
	}
	t, err := ParseDateTime(s)
	if err != nil {
		return err
	}
	*d = t
	return nil
}

// ParseDateTime reads the ISO 8601 profile System.Text.Json accepts:
// YYYY-MM-DD, optionally followed by Thh:mm, :ss and a fraction of up to 16
// digits, and a zone of Z, ±hh:mm or none. A value without a zone is taken
// as UTC (the farm keeps every time in UTC). Fraction digits beyond the
// ninth are truncated.
func ParseDateTime(s string) (DateTime, error) {
	bad := func(why string) (DateTime, error) {
		return DateTime{}, fmt.Errorf("contract: invalid DateTime %q: %s", s, why)
	}
	p := s
	digits := func(n int) (int, bool) {
		if len(p) < n {
			return 0, false
		}
		v := 0
		for i := 0; i < n; i++ {
			c := p[i]
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		p = p[n:]
		return v, true
	}
	sep := func(c byte) bool {
		if len(p) > 0 && p[0] == c {
			p = p[1:]
			return true
		}
		return false
	}
	year, ok := digits(4)
	if !ok || !sep('-') {
		return bad("expected YYYY-")
	}
	month, ok := digits(2)
	if !ok || !sep('-') {
		return bad("expected MM-")
	}
	day, ok := digits(2)
	if !ok {
		return bad("expected DD")
	}
	var hour, minute, sec, nsec int
	if len(p) > 0 {
		if !sep('T') && !sep('t') {
			return bad("expected T after the date")
		}
		if hour, ok = digits(2); !ok || !sep(':') {
			return bad("expected hh:")
		}
		if minute, ok = digits(2); !ok {
			return bad("expected mm")
		}
		if sep(':') {
			if sec, ok = digits(2); !ok {
				return bad("expected ss")
			}
			if sep('.') {
				n := 0
				for n < len(p) && p[n] >= '0' && p[n] <= '9' {
					n++
				}
				if n == 0 || n > 16 {
					return bad("fraction must be 1 to 16 digits")
				}
				for i := 0; i < 9; i++ {
					nsec *= 10
					if i < n {
						nsec += int(p[i] - '0')
					}
				}
				p = p[n:]
			}
		}
	}
	loc := time.UTC
	switch {
	case len(p) == 0:
	case p == "Z" || p == "z":
		p = ""
	case p[0] == '+' || p[0] == '-':
		sign := 1
		if p[0] == '-' {
			sign = -1
		}
		p = p[1:]
		oh, ok1 := digits(2)
		ok2 := sep(':')
		om, ok3 := digits(2)
		if !ok1 || !ok2 || !ok3 || len(p) != 0 || oh > 14 || om > 59 {
			return bad("offset must be ±hh:mm")
		}
		loc = time.FixedZone("", sign*(oh*3600+om*60))
	default:
		return bad("unexpected characters after the time")
	}
	if len(p) != 0 {
		return bad("trailing characters")
	}
	if year < 1 || month < 1 || month > 12 || day < 1 || day > daysIn(year, month) ||
		hour > 23 || minute > 59 || sec > 59 {
		return bad("field out of range")
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, loc)
	return DateTime(t.UTC()), nil
}

func daysIn(year, month int) int {
	return time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}
