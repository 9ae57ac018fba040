// Package contract holds the wire DTOs of the OrchestratorChat real-time
// contract (CONTRACT.md §5) as Go types whose JSON form matches what the .NET
// clients expect from System.Text.Json:
//
//   - Field names are camelCase; reading is case-insensitive (encoding/json
//     falls back to a case-insensitive match) and unknown fields are ignored.
//   - Enums are integer types. They are always written as integers (a .NET
//     client without a string enum converter breaks on names) and accept both
//     integers and case-insensitive names on input.
//   - Non-nullable strings, lists and maps are always written: lists use
//     [List], maps use [Map] / [Dict], and both marshal nil as [] / {}, so a
//     zero-valued DTO never carries a JSON null. Nullable (?) fields are
//     pointers with omitempty.
//   - TimeSpan values are .NET "c" strings ([TimeSpan]); DateTime values are
//     ISO 8601 written in UTC with Z ([DateTime]).
//   - Read-only alias properties of the .NET types (supportsToolExecution,
//     lastActivity, duration, timeoutMinutes) are written by the owning type's
//     MarshalJSON and ignored on input.
//   - Defaults marked [x] in the contract (maxSteps 10, timeout 30 min, role
//     Assistant, maxConcurrentRequests 1, schema type "object") are applied by
//     UnmarshalJSON when the field is missing and by the New* constructors.
//
// The package is pure data: no I/O, no package-level mutable state.
package contract
