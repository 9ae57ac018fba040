package contract

import (
	"encoding/json"
)

// List is a JSON array that is never null: a nil List marshals as []. Any
// []T is assignable to a List[T] and back, so callers can keep using plain
// slices.
type List[T any] []T

// MarshalJSON writes the elements, or [] for a nil list.
func (l List[T]) MarshalJSON() ([]byte, error) {
	if l == nil {
		return []byte("[]"), nil
	}
	return json.Marshal([]T(l))
}

// Dict is a JSON object with verbatim (never re-cased) keys that is never
// null: a nil Dict marshals as {}. Any map[string]V is assignable to a
// Dict[V] and back.
type Dict[V any] map[string]V

// MarshalJSON writes the entries, or {} for a nil map.
func (d Dict[V]) MarshalJSON() ([]byte, error) {
	if d == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(map[string]V(d))
}

// Map is the contract's "map": a JSON object with verbatim keys and values of
// any type, written as {} when nil.
type Map = Dict[any]

// Bytes is a .NET byte[]: a base64 string, written as "" (never null) when
// nil.
type Bytes []byte

// MarshalJSON writes the base64 text, or "" for nil.
func (b Bytes) MarshalJSON() ([]byte, error) {
	if b == nil {
		return []byte(`""`), nil
	}
	return json.Marshal([]byte(b))
}

// UnmarshalJSON reads a base64 string; null leaves the value unchanged.
func (b *Bytes) UnmarshalJSON(data []byte) error {
	var raw []byte
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	if raw != nil || string(data) != "null" {
		*b = raw
	}
	return nil
}

// Ptr returns a pointer to v, for filling nullable (pointer) fields.
func Ptr[T any](v T) *T { return &v }
