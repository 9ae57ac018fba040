// Package tools runs the tools agents may call — read_file, write_file,
// list_files, grep and bash (DESIGN decision 10, CONTRACT §8.3) — confined
// to a session's working directory, and decides whether a call may run
// (the approval policy of CONTRACT §8.4).
//
// The package has three parts:
//
//   - [Executor] runs one tool call in a sandbox: every path is resolved
//     under Config.Root and the session's working directory, and refused
//     when it escapes (by "..", an absolute path or a symbolic link). File
//     I/O goes through [os.Root], so a symbolic link swapped in between the
//     check and the use cannot escape either.
//   - [Policy] is the pure part of the approval policy: given a call, it
//     answers Approve, Deny or AskUser, without I/O.
//   - [Approvals] coordinates the AskUser case across the farm: it stores
//     an approval record in Redis, notifies the hub, and waits for a
//     decision that may be given on any node.
//
// A hub's ExecuteTool therefore runs Approvals.Authorize and, when it
// approves, Executor.Execute.
package tools
