package postgres_test

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/egressd/egressd/internal/controlplane/store/postgres/pgtest"
)

// This file is what the heartbeat benchmarks read of PostgreSQL's own view of the load they
// make: its statistics of the benchmark's database, its WAL position, and the CPU time of its
// processes (from /proc, when the server runs on this machine).

// pgLoad reads the server's view of one database's load, over a connection to the server's
// own database (so that reading the statistics does not add to them).
type pgLoad struct {
	b      testing.TB
	url    string // the database's
	dbname string
	admin  *pgx.Conn
}

func newPGLoad(b testing.TB, dbURL string) *pgLoad {
	u, err := url.Parse(dbURL)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, pgtest.ServerURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { admin.Close(context.Background()) })
	return &pgLoad{b: b, url: dbURL, dbname: strings.TrimPrefix(u.Path, "/"), admin: admin}
}

// loadSnapshot is the counters at one instant.
type loadSnapshot struct {
	at                 time.Time
	commits, rollbacks int64                 // transactions of the database (each autocommit statement is one)
	inserted, updated  int64                 // rows
	walBytes           int64                 // the server's WAL position: every database's writes
	backendCPU         map[int]time.Duration // the database's client backends, by PID
	backgroundCPU      map[int]time.Duration // the server's own processes (WAL writer, autovacuum...)
	clientCPU          time.Duration         // this process
	cpuKnown           bool                  // the server's processes are visible in /proc
	clientKnown        bool
}

// settle waits until the database has no client connections left (close the stores
// first): a backend reports its statistics when it exits, whereas a live one may hold them
// for up to 10 s (PostgreSQL 15's PGSTAT_IDLE_INTERVAL).
func (l *pgLoad) settle(ctx context.Context) {
	for deadline := time.Now().Add(10 * time.Second); ; {
		var n int
		err := l.admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = $1 AND backend_type = 'client backend'`, l.dbname).Scan(&n)
		if err != nil {
			l.b.Fatalf("pg_stat_activity: %v", err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			l.b.Fatalf("%d connections to %s are still open after 10 s", n, l.dbname)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// An exiting backend leaves pg_stat_activity just before it flushes its statistics.
	time.Sleep(200 * time.Millisecond)
}

func (l *pgLoad) snapshot(ctx context.Context) loadSnapshot {
	s := loadSnapshot{at: time.Now(), backendCPU: map[int]time.Duration{}, backgroundCPU: map[int]time.Duration{}}
	err := l.admin.QueryRow(ctx, `SELECT xact_commit, xact_rollback, tup_inserted, tup_updated,
			pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint
		FROM pg_stat_database WHERE datname = $1`, l.dbname).
		Scan(&s.commits, &s.rollbacks, &s.inserted, &s.updated, &s.walBytes)
	if err != nil {
		l.b.Fatalf("pg_stat_database: %v", err)
	}
	// Client backends of other databases (other tests' on a shared server) are left out.
	rows, err := l.admin.Query(ctx, `SELECT pid, backend_type = 'client backend' FROM pg_stat_activity
		WHERE datname = $1 OR backend_type <> 'client backend'`, l.dbname)
	if err != nil {
		l.b.Fatalf("pg_stat_activity: %v", err)
	}
	type proc struct {
		PID    int32
		Client bool
	}
	procs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[proc])
	if err != nil {
		l.b.Fatalf("pg_stat_activity: %v", err)
	}
	// The server runs here if this connection's backend is a process of this machine.
	var self int32
	if err := l.admin.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&self); err != nil {
		l.b.Fatalf("pg_backend_pid: %v", err)
	}
	_, s.cpuKnown = postgresCPU(int(self))
	for _, p := range procs {
		cpu, ok := postgresCPU(int(p.PID))
		switch {
		case !ok:
		case p.Client:
			s.backendCPU[int(p.PID)] = cpu
		default:
			s.backgroundCPU[int(p.PID)] = cpu
		}
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		s.clientCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		s.clientKnown = true
	}
	return s
}

// loadDelta is what happened between two snapshots, per second of the run.
type loadDelta struct {
	seconds                       float64
	commitsPerSec                 float64
	rollbacks                     int64
	insertedPerSec                float64
	updatedPerSec                 float64
	walBytesPerSec                float64
	backendCores, backgroundCores float64 // CPU-seconds per second; 0 when unknown
	clientCores                   float64
	cpuKnown                      bool
}

// delta compares counters, start and end, over a run of the given length. The CPU times
// come from cpuStart and cpuEnd, taken while the run's backends were alive; the statistics
// from start and end, taken once they had been reported (settle).
func delta(start, end, cpuStart, cpuEnd loadSnapshot, run time.Duration) loadDelta {
	sec := run.Seconds()
	d := loadDelta{
		seconds:        sec,
		commitsPerSec:  float64(end.commits-start.commits) / sec,
		rollbacks:      end.rollbacks - start.rollbacks,
		insertedPerSec: float64(end.inserted-start.inserted) / sec,
		updatedPerSec:  float64(end.updated-start.updated) / sec,
		walBytesPerSec: float64(end.walBytes-start.walBytes) / sec,
	}
	cpuSec := cpuEnd.at.Sub(cpuStart.at).Seconds()
	if cpuStart.cpuKnown && cpuEnd.cpuKnown && cpuSec > 0 {
		d.cpuKnown = true
		d.backendCores = cpuUsed(cpuStart.backendCPU, cpuEnd.backendCPU).Seconds() / cpuSec
		d.backgroundCores = cpuUsed(cpuStart.backgroundCPU, cpuEnd.backgroundCPU).Seconds() / cpuSec
	}
	if cpuStart.clientKnown && cpuEnd.clientKnown && cpuSec > 0 {
		d.clientCores = (cpuEnd.clientCPU - cpuStart.clientCPU).Seconds() / cpuSec
	}
	return d
}

// report adds d to b's results.
func (d loadDelta) report(b *testing.B, beatsPerSec float64) {
	b.ReportMetric(d.commitsPerSec, "pg-xact/s")
	if beatsPerSec > 0 {
		b.ReportMetric(d.commitsPerSec/beatsPerSec, "pg-xact/beat")
		b.ReportMetric(d.walBytesPerSec/beatsPerSec, "WAL-B/beat")
	}
	if d.cpuKnown {
		b.ReportMetric(d.backendCores, "pg-backend-cores")
		b.ReportMetric(d.backgroundCores, "pg-background-cores")
	}
	if d.clientCores > 0 {
		b.ReportMetric(d.clientCores, "client-cores")
	}
	if d.rollbacks != 0 {
		b.Errorf("%d transactions rolled back during the run, want none", d.rollbacks)
	}
}

// tableStats is what PostgreSQL says of the nodes table after a run: how many updates were
// HOT (no index entry written, the old version reclaimable within its page) and its size.
func tableStats(b *testing.B, dbURL string) (hotPercent float64, size int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(context.Background())
	var upd, hot int64
	err = c.QueryRow(ctx, `SELECT n_tup_upd, n_tup_hot_upd, pg_total_relation_size('nodes')
		FROM pg_stat_user_tables WHERE relname = 'nodes'`).Scan(&upd, &hot, &size)
	if err != nil {
		b.Fatalf("pg_stat_user_tables: %v", err)
	}
	if upd > 0 {
		hotPercent = 100 * float64(hot) / float64(upd)
	}
	return hotPercent, size
}

// clockTick is the unit of /proc/<pid>/stat's CPU times (USER_HZ), 100 on every Linux that
// egressd runs on.
const clockTick = 10 * time.Millisecond

// postgresCPU is the CPU time (user and system) of process pid, if it is a postgres process
// of this machine.
func postgresCPU(pid int) (time.Duration, bool) {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
		return 0, false
	}
	return procCPU(pid)
}

// cpuUsed is the CPU time that processes used between two readings, by PID. A process that
// started in between counts whole; one that ended in between is lost (the readings are taken
// while the run's connections are open).
func cpuUsed(start, end map[int]time.Duration) time.Duration {
	var used time.Duration
	for pid, t := range end {
		used += t - start[pid]
	}
	return used
}

// procCPU reads utime and stime, fields 14 and 15 of /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The command (field 2) is in parentheses and may hold spaces: count from after it.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 > len(data) {
		return 0, false
	}
	fields := strings.Fields(string(data[i+2:])) // fields[0] is field 3, the state
	if len(fields) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * clockTick, true
}

// percentile is the p-quantile (0 < p ≤ 1) of sorted durations, in milliseconds.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	i = min(max(i, 0), len(sorted)-1)
	return float64(sorted[i]) / float64(time.Millisecond)
}

// latencies merges per-goroutine samples, sorted.
func latencies(parts [][]time.Duration) []time.Duration {
	all := slices.Concat(parts...)
	slices.Sort(all)
	return all
}
