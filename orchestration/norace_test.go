//go:build !race

package orchestration

// raceEnabled is true when tests run with -race.
const raceEnabled = false
