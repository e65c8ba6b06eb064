// spawn: cost of creating a goroutine that does nothing and waiting for it.
//
//	spawn_join        spawn one goroutine, wait for it (sync.WaitGroup), repeat
//	                  N = 1,000,000 times, strictly one at a time.
//	spawn_join_batch  spawn 1000 goroutines, then wait for all of them; repeat
//	                  1000 times. Reported per goroutine.
//
// GOMAXPROCS is left at its default (one per CPU). Each case is timed 3 times
// and the best is reported as `RESULT <case> <ns> ns/op`.
package main

import (
	"fmt"
	"sync"
	"time"
)

const n = 1000000
const batch = 1000

func spawnJoin() time.Duration {
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() { wg.Done() }()
		wg.Wait()
	}
	return time.Since(start)
}

func spawnJoinBatch() time.Duration {
	var wg sync.WaitGroup
	start := time.Now()
	for r := 0; r < n/batch; r++ {
		wg.Add(batch)
		for i := 0; i < batch; i++ {
			go func() { wg.Done() }()
		}
		wg.Wait()
	}
	return time.Since(start)
}

func best(f func() time.Duration) time.Duration {
	b := f()
	for i := 0; i < 2; i++ {
		if d := f(); d < b {
			b = d
		}
	}
	return b
}

func main() {
	d := best(spawnJoin)
	fmt.Printf("RESULT spawn_join %.1f ns/op\n", float64(d.Nanoseconds())/n)
	d = best(spawnJoinBatch)
	fmt.Printf("RESULT spawn_join_batch %.1f ns/op\n", float64(d.Nanoseconds())/n)
}
