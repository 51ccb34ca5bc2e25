# SPDX-License-Identifier: MIT
# plot.gp - the benchmark figures, from the .dat files idem_bench writes.
# usage: gnuplot -e "dat='bench/results'; img='docs/img'" bench/plot.gp
set terminal pngcairo size 1000,700 noenhanced font ",10"
set key top left
set grid
set logscale x 2
set xtics (1, 2, 4, 8)
set xrange [0.85:9.5]
set xlabel "processes or threads"

set output img.'/bench-contention-rate.png'
set multiplot layout 2,2 title "Aggregate throughput (median of the runs), NORMAL"
set ylabel "cycles/s"
set title "Processes, disjoint keys (begin + complete)"
plot dat.'/procs_disjoint.dat' u 1:2 w lp t 'SQLite floor', '' u 1:3 w lp t 'libidem', '' u 1:8 w lp t 'floor in the queue'
set title "Threads on one handle, disjoint keys"
plot dat.'/threads_disjoint.dat' u 1:2 w lp t 'SQLite floor', '' u 1:3 w lp t 'libidem'
set ylabel "ops/s"
set title "Processes, 16 hot keys (claim + release)"
plot dat.'/procs_hot.dat' u 1:2 w lp t 'SQLite floor', '' u 1:3 w lp t 'libidem'
set title "Threads on one handle, 16 hot keys"
plot dat.'/threads_hot.dat' u 1:2 w lp t 'SQLite floor', '' u 1:3 w lp t 'libidem'
unset multiplot

set output img.'/bench-contention-p99.png'
set multiplot layout 2,2 title "Latency per operation: p99 (lines) and max (dashed), NORMAL"
set logscale y 10
set ylabel "ms"
set title "Processes, disjoint keys"
plot dat.'/procs_disjoint.dat' u 1:($4/1000) w lp lc 1 t 'floor p99', '' u 1:($5/1000) w lp lc 2 t 'libidem p99', \
     '' u 1:($6/1000) w lp lc 1 dt 2 t 'floor max', '' u 1:($7/1000) w lp lc 2 dt 2 t 'libidem max', \
     '' u 1:($9/1000) w lp lc 3 t 'floor+queue p99', '' u 1:($10/1000) w lp lc 3 dt 2 t 'floor+queue max'
set title "Threads on one handle, disjoint keys"
plot dat.'/threads_disjoint.dat' u 1:($4/1000) w lp lc 1 t 'floor p99', '' u 1:($5/1000) w lp lc 2 t 'libidem p99', \
     '' u 1:($6/1000) w lp lc 1 dt 2 t 'floor max', '' u 1:($7/1000) w lp lc 2 dt 2 t 'libidem max'
set title "Processes, 16 hot keys"
plot dat.'/procs_hot.dat' u 1:($4/1000) w lp lc 1 t 'floor p99', '' u 1:($5/1000) w lp lc 2 t 'libidem p99', \
     '' u 1:($6/1000) w lp lc 1 dt 2 t 'floor max', '' u 1:($7/1000) w lp lc 2 dt 2 t 'libidem max'
set title "Threads on one handle, 16 hot keys"
plot dat.'/threads_hot.dat' u 1:($4/1000) w lp lc 1 t 'floor p99', '' u 1:($5/1000) w lp lc 2 t 'libidem p99', \
     '' u 1:($6/1000) w lp lc 1 dt 2 t 'floor max', '' u 1:($7/1000) w lp lc 2 dt 2 t 'libidem max'
unset multiplot

set terminal pngcairo size 1000,400 noenhanced font ",10"
set output img.'/bench-heartbeat.png'
set multiplot layout 1,2 title "Heartbeat round over all live leases of one handle, NORMAL"
set logscale x 10
set xrange [5:20000]
set xtics (10, 100, 1000, 10000)
set xlabel "live leases"
set ylabel "ms"
set title "Wall time per round (median)"
plot dat.'/heartbeat.dat' u 1:($2/1000) w lp t 'SQLite floor', '' u 1:($3/1000) w lp t 'libidem', 50 w l dt 2 lc 0 t 'target 50 ms'
set title "CPU per round (user + system)"
plot dat.'/heartbeat.dat' u 1:($4/1000) w lp t 'SQLite floor', '' u 1:($5/1000) w lp t 'libidem'
unset multiplot

set output img.'/bench-size.png'
set multiplot layout 1,2 title "Fresh-key cycle against existing rows, NORMAL"
set xtics (1000, 100000, 1000000)
set xrange [500:2000000]
set xlabel "existing rows (0 drawn at 1000)"
set title "Throughput (median)"
set ylabel "cycles/s"
unset logscale y
set yrange [0:*]
plot dat.'/size.dat' u ($1 > 0 ? $1 : 1000):2 w lp t 'SQLite floor', '' u ($1 > 0 ? $1 : 1000):3 w lp t 'libidem'
set title "p99 per cycle"
set ylabel "ms"
set logscale y 10
set yrange [*:*]
plot dat.'/size.dat' u ($1 > 0 ? $1 : 1000):($4/1000) w lp t 'SQLite floor', '' u ($1 > 0 ? $1 : 1000):($5/1000) w lp t 'libidem'
unset multiplot
