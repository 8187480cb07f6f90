package postgres_test

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/postgres"
	"github.com/egressd/egressd/internal/controlplane/store/postgres/pgtest"
)

// The settings of BenchmarkHeartbeats. Each is bounded (checkHeartbeatFlags), so that no
// setting makes a run that does not end or that takes the whole server.
var (
	hbNodes    = flag.Int("heartbeat.nodes", 1000, "BenchmarkHeartbeats: simulated nodes (1 to 10000)")
	hbDuration = flag.Duration("heartbeat.duration", 10*time.Second, "BenchmarkHeartbeats/fleet: how long the fleet runs (1s to 2m)")
	hbReads    = flag.Int("heartbeat.reads", 10, "BenchmarkHeartbeats/fleet: fleet reads (ListNodes and Now, as GET /v1/nodes and ?wait=fleet make) per second (0 to 1000)")
	hbConns    = flag.Int("heartbeat.conns", 32, "BenchmarkHeartbeats/fleet: connections of the store that carries every simulated node (1 to 64)")
	hbWorkers  = flag.String("heartbeat.workers", "1,4,16,64", "BenchmarkHeartbeats/max: numbers of concurrent heartbeaters to try, each with a connection (1 to 64 each)")
)

const (
	// hbInterval and hbJitter: a node beats every second (fleet.Interval), each beat up to
	// 10% early or late, so that nodes started together drift apart as real ones do.
	hbInterval = time.Second
	hbJitter   = hbInterval / 10
	// hbTimeout bounds one beat, as fleet's beatTimeout does.
	hbTimeout = 5 * time.Second
)

// BenchmarkHeartbeats measures what a fleet's heartbeats cost PostgreSQL (DESIGN §5, issue
// 11): each node calls PutNode every second. Run it on its own, e.g.
//
//	go test ./internal/controlplane/store/postgres -run '^$' -bench Heartbeats -benchtime 5s
//
// fleet: -heartbeat.nodes nodes (1,000) each beat once a second, jittered, for
// -heartbeat.duration (10 s), through one store of -heartbeat.conns connections, while
// -heartbeat.reads fleet reads a second run alongside (ListNodes and Now, what GET /v1/nodes
// and every 100 ms of a ?wait=fleet request cost). It reports:
//   - the beats achieved against those offered (beats/s, offered-beats/s; a beat due while
//     the node's last one is still running is dropped, as time.Ticker drops ticks);
//   - PutNode's latency (put-p50-ms, put-p99-ms) and the reads' (read-p50-ms, read-p99-ms);
//   - PostgreSQL's own view: transactions a second from pg_stat_database (pg-xact/s; every
//     autocommit statement is one), WAL written a beat (the server's, so any other
//     database's writes count too), and, in cores, the CPU time of the database's backends
//     and of the server's own processes (WAL writer, checkpointer, autovacuum...), from /proc
//     when the server runs on this machine.
//
// The simulation runs once per call whatever b.N, and ns/op is left out. Every node must
// still be up at the end.
//
// max/workers=W: W goroutines, each with a connection, heartbeat for the 1,000 nodes as fast
// as they can (b.N beats in all): the rate this server sustains, for the headroom of the
// paced run above (beats/s, and its latencies and load as above).
//
// The client shares the machine with the server when the server is local: client-cores says
// how much CPU the simulation itself took.
func BenchmarkHeartbeats(b *testing.B) {
	workers := checkHeartbeatFlags(b)
	pgtest.Require(b)
	b.Run("fleet", benchFleet)
	for _, w := range workers {
		b.Run(fmt.Sprintf("max/workers=%d", w), func(b *testing.B) { benchMaxBeats(b, w) })
	}
}

// checkHeartbeatFlags fails b unless every setting is within its bounds, and returns the
// worker counts of the max runs.
func checkHeartbeatFlags(b *testing.B) []int {
	b.Helper()
	switch {
	case *hbNodes < 1 || *hbNodes > 10000:
		b.Fatalf("-heartbeat.nodes=%d: want 1 to 10000", *hbNodes)
	case *hbDuration < time.Second || *hbDuration > 2*time.Minute:
		b.Fatalf("-heartbeat.duration=%v: want 1s to 2m", *hbDuration)
	case *hbReads < 0 || *hbReads > 1000:
		b.Fatalf("-heartbeat.reads=%d: want 0 to 1000", *hbReads)
	case *hbConns < 1 || *hbConns > 64:
		b.Fatalf("-heartbeat.conns=%d: want 1 to 64", *hbConns)
	}
	var workers []int
	for _, f := range strings.Split(*hbWorkers, ",") {
		w, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || w < 1 || w > 64 {
			b.Fatalf("-heartbeat.workers=%q: want a comma-separated list of numbers from 1 to 64", *hbWorkers)
		}
		workers = append(workers, w)
	}
	return workers
}

// simNode is simulated node i, registered as a transparent gateway registers: roles,
// address, labels and a sandbox range of its own.
func simNode(i int) store.Node {
	return store.Node{
		ID:          fmt.Sprintf("gw-%05d", i),
		Roles:       []string{"api", "gateway", "transparent"},
		Address:     fmt.Sprintf("198.51.100.%d:%d", i%254+1, 8470+i/254),
		Labels:      map[string]string{"zone": fmt.Sprintf("zone-%d", i%3), "rack": fmt.Sprintf("r%02d", i%40)},
		SandboxCIDR: fmt.Sprintf("100.96.%d.%d/26", (i/4)%256, (i%4)*64),
		Revision:    1000,
		VMs:         i % 17,
	}
}

// registered makes a new database with nodes nodes registered, and returns its URL.
func registered(b *testing.B, nodes int) string {
	b.Helper()
	dbURL := pgtest.NewDatabase(b)
	const conns = 16
	st := openStore(b, dbURL, conns)
	defer st.Close()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for w := range conns {
		wg.Go(func() {
			for i := w; i < nodes; i += conns {
				if err := st.PutNode(b.Context(), simNode(i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("registering the nodes: %v", err)
	}
	return dbURL
}

// openStore opens a store of at most conns connections on dbURL.
func openStore(b *testing.B, dbURL string, conns int) *postgres.Store {
	b.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		b.Fatal(err)
	}
	q := u.Query()
	q.Set("pool_max_conns", strconv.Itoa(conns))
	u.RawQuery = q.Encode()
	st, err := postgres.Open(b.Context(), u.String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

// startLoad opens the store of a run on a database with nodes nodes registered, and takes
// the server's counters before it: the registration's backends have exited, and so have
// reported their statistics. (The run's counts include the run's store opening: a few
// transactions.)
func startLoad(b *testing.B, nodes, conns int) (*postgres.Store, *pgLoad, loadSnapshot) {
	dbURL := registered(b, nodes)
	load := newPGLoad(b, dbURL)
	load.settle(b.Context())
	before := load.snapshot(b.Context())
	return openStore(b, dbURL, conns), load, before
}

// nodeRun is what one simulated node did.
type nodeRun struct {
	offered, dropped, failed int
	lastErr                  error
	latencies                []time.Duration // of the beats that succeeded
}

// simulateNode beats for node n from a random instant of the first second after start until
// end, every hbInterval ± hbJitter.
func simulateNode(ctx context.Context, st store.Store, n store.Node, start, end time.Time, rng *rand.Rand) nodeRun {
	var r nodeRun
	jitter := func() time.Duration { return time.Duration(rng.Int64N(int64(2*hbJitter))) - hbJitter }
	next := start.Add(time.Duration(rng.Int64N(int64(hbInterval))))
	timer := time.NewTimer(0)
	defer timer.Stop()
	for next.Before(end) {
		r.offered++
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return r
		case <-timer.C:
		}
		began := time.Now()
		bctx, cancel := context.WithTimeout(ctx, hbTimeout)
		err := st.PutNode(bctx, n)
		cancel()
		if err != nil {
			r.failed++
			r.lastErr = err
		} else {
			r.latencies = append(r.latencies, time.Since(began))
		}
		next = next.Add(hbInterval + jitter())
		// Beats that fell due while this one ran are dropped, as time.Ticker drops ticks.
		for now := time.Now(); next.Before(now) && next.Before(end); next = next.Add(hbInterval) {
			r.offered++
			r.dropped++
		}
	}
	return r
}

// readRun is what the fleet readers did.
type readRun struct {
	latencies []time.Duration
	failed    int
	lastErr   error
	minUp     int // the fewest nodes up at any read
}

// simulateReads reads the fleet perSec times a second until end, as GET /v1/nodes and
// ?wait=fleet do (api.readNodes): ListNodes, then Now, and counts the nodes up.
func simulateReads(ctx context.Context, st store.Store, perSec int, end time.Time) readRun {
	r := readRun{minUp: -1}
	if perSec == 0 {
		return r
	}
	tick := time.NewTicker(time.Second / time.Duration(perSec))
	defer tick.Stop()
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return r
		case <-tick.C:
		}
		began := time.Now()
		nodes, err := st.ListNodes(ctx)
		var now time.Time
		if err == nil {
			now, err = st.Now(ctx)
		}
		if err != nil {
			r.failed++
			r.lastErr = err
			continue
		}
		r.latencies = append(r.latencies, time.Since(began))
		up := 0
		for _, n := range nodes {
			if n.Up(now) {
				up++
			}
		}
		if r.minUp < 0 || up < r.minUp {
			r.minUp = up
		}
	}
	return r
}

func benchFleet(b *testing.B) {
	nodes, run := *hbNodes, *hbDuration
	st, load, before := startLoad(b, nodes, *hbConns)
	// Bounded whatever happens to the server: the run plus the beats' own timeout.
	ctx, cancel := context.WithTimeout(b.Context(), run+2*hbTimeout)
	defer cancel()
	cpuStart := load.snapshot(ctx)
	start := time.Now()
	end := start.Add(run)

	runs := make([]nodeRun, nodes)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 11))
			runs[i] = simulateNode(ctx, st, simNode(i), start, end, rng)
		})
	}
	var reads readRun
	wg.Go(func() { reads = simulateReads(ctx, st, *hbReads, end) })
	wg.Wait()
	elapsed := time.Since(start)
	cpuEnd := load.snapshot(ctx)
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	load.settle(ctx)
	after := load.snapshot(ctx)
	b.StopTimer()

	var offered, dropped, failed int
	var lastErr error
	var lat [][]time.Duration
	for _, r := range runs {
		offered += r.offered
		dropped += r.dropped
		failed += r.failed
		lastErr = cmp.Or(r.lastErr, lastErr)
		lat = append(lat, r.latencies)
	}
	if failed > 0 {
		b.Errorf("%d heartbeats failed, one with %v", failed, lastErr)
	}
	beats := latencies(lat)
	if reads.lastErr != nil {
		b.Errorf("%d fleet reads failed, the last with %v", reads.failed, reads.lastErr)
	}
	if reads.minUp >= 0 && reads.minUp < nodes {
		b.Errorf("a fleet read found only %d of the %d nodes up", reads.minUp, nodes)
	}
	readLat := latencies([][]time.Duration{reads.latencies})

	beatsPerSec := float64(len(beats)) / run.Seconds()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(beatsPerSec, "beats/s")
	b.ReportMetric(float64(offered)/run.Seconds(), "offered-beats/s")
	b.ReportMetric(float64(dropped), "dropped-beats")
	b.ReportMetric(percentile(beats, 0.50), "put-p50-ms")
	b.ReportMetric(percentile(beats, 0.99), "put-p99-ms")
	b.ReportMetric(percentile(beats, 1), "put-max-ms")
	if len(readLat) > 0 {
		b.ReportMetric(percentile(readLat, 0.50), "read-p50-ms")
		b.ReportMetric(percentile(readLat, 0.99), "read-p99-ms")
	}
	delta(before, after, cpuStart, cpuEnd, elapsed).report(b, beatsPerSec)
	hot, size := tableStats(b, load.url)
	b.ReportMetric(hot, "hot-update-%")
	b.ReportMetric(float64(size)/1024, "nodes-table-KB")
}

func benchMaxBeats(b *testing.B, workers int) {
	nodes := *hbNodes
	st, load, before := startLoad(b, nodes, workers)
	ctx := b.Context()
	cpuStart := load.snapshot(ctx)

	jobs := make(chan int, workers)
	lat := make([][]time.Duration, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range jobs {
				if errs[w] != nil {
					continue // drain, so that the loop below never blocks
				}
				began := time.Now()
				if err := st.PutNode(ctx, simNode(i%nodes)); err != nil {
					errs[w] = err
					continue
				}
				lat[w] = append(lat[w], time.Since(began))
			}
		})
	}
	start := time.Now()
	i := 0
	for b.Loop() {
		jobs <- i
		i++
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	cpuEnd := load.snapshot(ctx)
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	load.settle(ctx)
	after := load.snapshot(ctx)
	for _, err := range errs {
		if err != nil {
			b.Fatalf("PutNode: %v", err)
		}
	}

	beats := latencies(lat)
	beatsPerSec := float64(len(beats)) / elapsed.Seconds()
	b.ReportMetric(beatsPerSec, "beats/s")
	b.ReportMetric(percentile(beats, 0.50), "put-p50-ms")
	b.ReportMetric(percentile(beats, 0.99), "put-p99-ms")
	delta(before, after, cpuStart, cpuEnd, elapsed).report(b, beatsPerSec)
}
