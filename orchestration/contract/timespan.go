package contract

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// TimeSpan is a .NET System.TimeSpan: a duration written as the invariant
// "c" string [-][d.]hh:mm:ss[.fffffff]. The fraction has exactly seven
// digits (100 ns ticks) when non-zero and is left out when zero, so
// 1.5 s is "00:00:01.5000000" and 26h3m4.5s is "1.02:03:04.5000000".
// Precision below 100 ns is truncated when writing.
type TimeSpan time.Duration

// Duration returns the value as a time.Duration.
func (t TimeSpan) Duration() time.Duration { return time.Duration(t) }

// String returns the .NET "c" form.
func (t TimeSpan) String() string { return string(t.appendText(nil)) }

func (t TimeSpan) appendText(b []byte) []byte {
	ticks := int64(t) / 100 // truncates toward zero, like .NET's tick conversion
	neg := ticks < 0
	var u uint64
	if neg {
		b = append(b, '-')
		u = uint64(-(ticks + 1)) + 1 // safe for math.MinInt64/100
	} else {
		u = uint64(ticks)
	}
	const ticksPerSecond = 10_000_000
	frac := u % ticksPerSecond
	secs := u / ticksPerSecond
	days := secs / 86400
	secs %= 86400
	if days > 0 {
		b = strconv.AppendUint(b, days, 10)
		b = append(b, '.')
	}
	b = append2(b, secs/3600)
	b = append(b, ':')
	b = append2(b, secs/60%60)
	b = append(b, ':')
	b = append2(b, secs%60)
	if frac != 0 {
		b = append(b, '.')
		var digits [7]byte
		for i := 6; i >= 0; i-- {
			digits[i] = byte('0' + frac%10)
			frac /= 10
		}
		b = append(b, digits[:]...)
	}
	return b
}

func append2(b []byte, v uint64) []byte {
	return append(b, byte('0'+v/10), byte('0'+v%10))
}

// MarshalJSON writes the .NET "c" string.
func (t TimeSpan) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 28)
	b = append(b, '"')
	b = t.appendText(b)
	return append(b, '"'), nil
}

// UnmarshalJSON reads a .NET TimeSpan string (8–26 characters, as
// System.Text.Json requires). Numbers are rejected; null is ignored.
func (t *TimeSpan) UnmarshalJSON(data []byte) error {
	if isNull(data) {
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("contract: TimeSpan must be a string like \"00:05:00\": %w", err)
	}
	v, err := ParseTimeSpan(s)
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// ParseTimeSpan parses [-][d.]hh:mm:ss[.f{1,7}] with hours < 24 and minutes
// and seconds < 60. The input must be 8–26 characters long, as in
// System.Text.Json. Values beyond a Go duration (about 106751 days) are
// rejected.
func ParseTimeSpan(s string) (TimeSpan, error) {
	bad := func(why string) (TimeSpan, error) {
		return 0, fmt.Errorf("contract: invalid TimeSpan %q: %s", s, why)
	}
	if len(s) < 8 || len(s) > 26 {
		return bad("length must be 8 to 26 characters")
	}
	p := s
	neg := false
	if p[0] == '-' {
		neg, p = true, p[1:]
	}
	num := func(max int) (uint64, bool) {
		i := 0
		for i < len(p) && i < max && p[i] >= '0' && p[i] <= '9' {
			i++
		}
		if i == 0 {
			return 0, false
		}
		v, err := strconv.ParseUint(p[:i], 10, 64)
		p = p[i:]
		return v, err == nil
	}
	first, ok := num(8)
	if !ok {
		return bad("expected digits")
	}
	var days, hours uint64
	switch {
	case len(p) > 0 && p[0] == '.':
		days, p = first, p[1:]
		if hours, ok = num(2); !ok {
			return bad("expected hours")
		}
	case len(p) > 0 && p[0] == ':':
		if first > 99 {
			return bad("hours out of range")
		}
		hours = first
	default:
		return bad("expected hh:mm:ss")
	}
	if len(p) == 0 || p[0] != ':' {
		return bad("expected ':' after hours")
	}
	p = p[1:]
	minutes, ok := num(2)
	if !ok || len(p) == 0 || p[0] != ':' {
		return bad("expected minutes and ':'")
	}
	p = p[1:]
	seconds, ok := num(2)
	if !ok {
		return bad("expected seconds")
	}
	var ticks uint64
	if len(p) > 0 {
		if p[0] != '.' {
			return bad("unexpected characters after seconds")
		}
		p = p[1:]
		n := len(p)
		frac, ok := num(7)
		if !ok || len(p) != 0 {
			return bad("fraction must be 1 to 7 digits")
		}
		for ; n < 7; n++ {
			frac *= 10
		}
		ticks = frac
	}
	if hours > 23 || minutes > 59 || seconds > 59 {
		return bad("hours, minutes or seconds out of range")
	}
	total := ((days*24+hours)*60+minutes)*60 + seconds
	// Go durations end at ~292 years, well short of .NET's TimeSpan.MaxValue.
	const maxSeconds = uint64(math.MaxInt64 / int64(time.Second))
	const maxRestNanos = uint64(math.MaxInt64 % int64(time.Second))
	if total > maxSeconds || (total == maxSeconds && ticks*100 > maxRestNanos) {
		return bad("out of range for a Go duration")
	}
	d := time.Duration(total)*time.Second + time.Duration(ticks)*100
	if neg {
		d = -d
	}
	return TimeSpan(d), nil
}
