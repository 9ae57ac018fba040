package orchestration

import (
	"errors"
	"fmt"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// Error is the error type of every hub-facing engine method. Code is one of
// the contract.Code* constants; Message is safe to show to a client (no Redis
// internals); Err, when set, is the underlying cause for logs.
type Error struct {
	Code    string
	Message string
	Err     error
}

// Error returns the client-safe message.
func (e *Error) Error() string { return e.Message }

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Response converts the error to the ReceiveError payload.
func (e *Error) Response(sessionID string, now contract.DateTime) contract.ErrorResponse {
	r := contract.ErrorResponse{Error: e.Message, Code: e.Code, Timestamp: now}
	if sessionID != "" {
		r.SessionID = contract.Ptr(sessionID)
	}
	return r
}

// CodeOf returns the Code of an *Error in err's chain, or
// contract.CodeProcessingError for any other non-nil error.
func CodeOf(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return contract.CodeProcessingError
}

func errf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// internal wraps a store failure: the client sees a generic message, logs
// see the operation and cause.
func internal(op string, err error) *Error {
	return &Error{Code: contract.CodeProcessingError,
		Message: "The orchestration store is unavailable; please retry",
		Err:     fmt.Errorf("%s: %w", op, err)}
}
