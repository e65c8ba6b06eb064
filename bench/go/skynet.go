// skynet: the classic goroutine-creation benchmark.
//
// A tree of goroutines ten wide and six deep: 1,000,000 leaves, 1,111,111
// goroutines in all. Each leaf sends its own number to its parent over an
// unbuffered channel; each inner node sums what its ten children sent and
// passes the sum up. The root must see 0+1+...+999999 = 499999500000.
//
// Prints the sum and, for the best of 3 runs, `RESULT skynet <ms> ms`.
package main

import (
	"fmt"
	"os"
	"time"
)

func skynet(c chan int, num, size, div int) {
	if size == 1 {
		c <- num
		return
	}
	rc := make(chan int)
	var sum int
	for i := 0; i < div; i++ {
		subNum := num + i*(size/div)
		go skynet(rc, subNum, size/div, div)
	}
	for i := 0; i < div; i++ {
		sum += <-rc
	}
	c <- sum
}

func main() {
	const runs = 3
	const want = 499999500000
	best := time.Duration(1<<63 - 1)
	for r := 0; r < runs; r++ {
		c := make(chan int)
		start := time.Now()
		go skynet(c, 0, 1000000, 10)
		sum := <-c
		took := time.Since(start)
		fmt.Printf("run %d: sum %d in %.1f ms\n", r+1, sum, float64(took.Nanoseconds())/1e6)
		if sum != want {
			fmt.Fprintf(os.Stderr, "skynet: wrong sum %d, want %d\n", sum, want)
			os.Exit(1)
		}
		if took < best {
			best = took
		}
	}
	fmt.Printf("RESULT skynet %.1f ms\n", float64(best.Nanoseconds())/1e6)
}
