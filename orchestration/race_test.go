//go:build race

package orchestration

// raceEnabled is true when tests run with -race, which slows the engine
// several times; load tests shrink accordingly.
const raceEnabled = true
