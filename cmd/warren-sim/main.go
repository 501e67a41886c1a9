// Command warren-sim runs a simulated site (package sim): many real warren
// nodes behind one hub over an in-memory network, and prints what
// happened. `make sim` runs 1,000 nodes in 20 subnets.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"time"

	"github.com/warren-cache/warren/sim"
)

func main() {
	var c sim.Config
	flag.IntVar(&c.Nodes, "nodes", 1000, "nodes on the site")
	flag.IntVar(&c.Subnets, "subnets", 20, "subnets the nodes are spread over, each behind its own WAN link to the hub")
	flag.IntVar(&c.Artifacts, "artifacts", 3, "artifacts every node wants")
	size := flag.Int64("size-kib", 1024, "size of each artifact, KiB")
	flag.DurationVar(&c.Spread, "spread", 60*time.Second, "each node asks for each artifact at a random moment within this")
	nic := flag.Float64("nic-mbit", 100, "each node's network card, Mbit/s each way")
	wan := flag.Float64("wan-mbit", 8, "each subnet's link to the hub, Mbit/s each way")
	origin := flag.Float64("origin-mbit", 8, "the hub's link to the origin, Mbit/s")
	flag.IntVar(&c.Slots, "upload-slots", 2, "upload slots of each node")
	flag.StringVar(&c.Dir, "dir", "", "where the nodes' caches go (default: a temporary directory, removed after)")
	flag.Uint64Var(&c.Seed, "seed", 1, "random seed (request times, membership)")
	flag.DurationVar(&c.Delay, "delay", 0, "most a node's scheduling delay adds to each datagram and connection it receives (heavy-tailed; 0: none)")
	flag.Float64Var(&c.Loss, "loss", 0, "share of datagrams lost (0.02: 2%)")
	flag.BoolVar(&c.Strangers, "strangers", false, "the nodes of a subnet do not know each other (no broadcast, no membership): only the hub brings them together")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "warren-sim: unexpected argument %q (flags only; -h lists them)\n", flag.Arg(0))
		os.Exit(2)
	}
	c.Size = *size << 10
	c.NodeNIC, c.WAN, c.Origin = *nic*1e6/8, *wan*1e6/8, *origin*1e6/8
	c.Progress = func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "warren-sim: "+format+"\n", args...)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "warren-sim: %v\n", err)
			os.Exit(1)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "warren-sim: %v\n", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := sim.Run(ctx, c)
	if err != nil {
		fmt.Fprintf(os.Stderr, "warren-sim: %v\n", err)
		stop()
		pprof.StopCPUProfile()
		os.Exit(1)
	}
	rep.Print(os.Stdout)
}
