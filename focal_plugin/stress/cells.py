"""Running the cells of a sweep: one ``tools/train.py`` process per cell, their records on
disk, and the snapshots that let a cell continue on another machine."""
import fcntl
import json
import os
import os.path as osp
import shlex
import shutil
import signal
import subprocess
import time

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from focal_plugin.jsonio import write_json

RECORD_FILE = 'divergence.json'  # written by DivergenceRecorderHook
CELL_FILE = 'sweep_cell.json'  # written here: command, exit code, wall time per leg
FINISHED = ('completed', 'diverged')
LAST_CHECKPOINT = 'last_checkpoint'  # mmengine's pointer to the newest checkpoint


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_finished(work_dir):
    record = read_json(osp.join(work_dir, RECORD_FILE))
    cell = read_json(osp.join(work_dir, CELL_FILE))
    return bool(record and record.get('status') in FINISHED and cell
                and cell.get('returncode') == 0)


def describe(record):
    if not record:
        return 'no record'
    if record['status'] == 'diverged':
        nf = record['nonfinite']
        return (f"diverged at epoch {nf['epoch']}, iteration {nf['iteration']} "
                f"({record['completed_epochs']} epochs completed)")
    return f"{record['status']} ({record['completed_epochs']}/{record['max_epochs']} epochs)"


def log_tail(path, lines=15):
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-lines:])
    except OSError:
        return ''


class Snapshot:
    """A cell's progress outside its work dir: the newest checkpoint and the records, in
    ``root/<cell>/``, small enough to commit. ``save`` follows a running cell, ``restore``
    seeds an empty work dir from it (so ``--resume`` continues the run on another machine)."""

    RECORDS = (RECORD_FILE, CELL_FILE)

    def __init__(self, root, name):
        self.dir = osp.join(root, name)
        self._saved = None  # the checkpoint copied last

    def checkpoints(self):
        if not osp.isdir(self.dir):
            return []
        return sorted(f for f in os.listdir(self.dir) if f.endswith('.pth'))

    def restore(self, work_dir):
        """Copy records and checkpoint into ``work_dir`` unless it has its own progress."""
        if osp.isfile(osp.join(work_dir, RECORD_FILE)) or not osp.isdir(self.dir):
            return False
        os.makedirs(work_dir, exist_ok=True)
        for name in self.RECORDS + tuple(self.checkpoints()):
            if osp.isfile(osp.join(self.dir, name)):
                shutil.copy2(osp.join(self.dir, name), osp.join(work_dir, name))
        for name in self.checkpoints()[-1:]:
            with open(osp.join(work_dir, LAST_CHECKPOINT), 'w') as f:
                f.write(osp.abspath(osp.join(work_dir, name)))
        return True

    def _copy_here(self, src_dir, name):
        tmp = osp.join(self.dir, name + '.tmp')
        shutil.copy2(osp.join(src_dir, name), tmp)
        os.replace(tmp, osp.join(self.dir, name))

    def save_checkpoint(self, work_dir):
        """Copy the work dir's newest checkpoint if it is new; only the newest is kept.
        (mmengine writes ``last_checkpoint`` after the checkpoint file is complete.)"""
        try:
            with open(osp.join(work_dir, LAST_CHECKPOINT)) as f:
                checkpoint = f.read().strip()
        except OSError:
            return False
        if checkpoint == self._saved or not osp.isfile(checkpoint):
            return False
        os.makedirs(self.dir, exist_ok=True)
        older = [f for f in self.checkpoints() if f != osp.basename(checkpoint)]
        self._copy_here(osp.dirname(checkpoint), osp.basename(checkpoint))
        for name in older:
            os.remove(osp.join(self.dir, name))
        self._saved = checkpoint
        return True

    def save_records(self, work_dir, keep_checkpoint=True):
        """Copy the records; a finished cell needs no weights to be resumed."""
        os.makedirs(self.dir, exist_ok=True)
        for name in self.RECORDS:
            if osp.isfile(osp.join(work_dir, name)):
                self._copy_here(work_dir, name)
        if not keep_checkpoint:
            for name in self.checkpoints():
                os.remove(osp.join(self.dir, name))


class CellLocked(RuntimeError):
    """Another process trains this cell's work dir."""


def _lock_work_dir(work_dir):
    """An exclusive lock on ``work_dir/train.lock``, held until every process holding it (this
    sweep, its trainer) has ended, however it ends; ``CellLocked`` names the PID written in
    the file."""
    path = osp.join(work_dir, 'train.lock')
    handle = open(path, 'a+')
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or 'unknown'
        handle.close()
        raise CellLocked(f'{work_dir} is being trained by another sweep (PID {holder}); '
                         'wait for it or stop it before running this cell again') from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class CellRun:
    """One running ``tools/train.py`` process: one leg of a cell, which may take several
    (interrupted and resumed); ``sweep_cell.json`` lists the legs and their total wall time.
    The work dir is locked while it runs (:class:`CellLocked` for a second sweep)."""

    def __init__(self, cell, cmd, work_dir, threads, snapshot=None):
        os.makedirs(work_dir, exist_ok=True)
        self._lock = _lock_work_dir(work_dir)
        self.cell, self.cmd, self.work_dir, self.snapshot = cell, cmd, work_dir, snapshot
        self.log_path = osp.join(work_dir, 'sweep_stdout.log')
        earlier = read_json(osp.join(work_dir, CELL_FILE)) or {}
        self._earlier_legs = earlier.get('legs') or (
            [dict(command=earlier['command'], returncode=earlier.get('returncode'),
                  wall_s=earlier['wall_s'])] if 'wall_s' in earlier else [])
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self._log = open(self.log_path, 'a')
        self.start = time.time()
        # its own session: a terminal's Ctrl-C reaches the sweep alone, which passes it on
        # (run_cells); the trainer inherits the lock, so a trainer outliving a SIGKILLed
        # sweep still holds the work dir, and the lock file names it
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True,
                                        pass_fds=(self._lock.fileno(),))
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(str(self.process.pid))
        self._lock.flush()

    def training(self):
        """Whether the trainer has started training (its record says 'running')."""
        return (read_json(osp.join(self.work_dir, RECORD_FILE)) or {}).get('status') == 'running'

    def interrupt(self, signum):
        """Pass a signal on: the trainer finishes its epoch, saves it and exits."""
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def _write_meta(self, code):
        legs = self._earlier_legs + [dict(command=shlex.join(self.cmd), returncode=code,
                                          wall_s=time.time() - self.start)]
        write_json(osp.join(self.work_dir, CELL_FILE), dict(
            command=shlex.join(self.cmd), returncode=code,
            wall_s=sum(leg['wall_s'] for leg in legs), legs=legs))

    def poll(self):
        """None while running; else the exit code (and the cell's sweep record is written).
        With a snapshot, a new checkpoint is copied there as soon as it appears."""
        code = self.process.poll()
        if code is None:
            if self.snapshot is not None and self.snapshot.save_checkpoint(self.work_dir):
                self._write_meta(None)  # the wall time so far, in case this leg is cut off
                self.snapshot.save_records(self.work_dir)
            return None
        self._log.close()
        self._write_meta(code)
        self._lock.close()
        if self.snapshot is not None:
            self.snapshot.save_checkpoint(self.work_dir)
            self.snapshot.save_records(self.work_dir,
                                       keep_checkpoint=not is_finished(self.work_dir))
        return code

    def epochs_done(self):
        record = read_json(osp.join(self.work_dir, RECORD_FILE)) or {}
        return record.get('completed_epochs', 0), record.get('max_epochs')


def run_cells(todo, jobs, threads, total, skipped, resume_hint='', budget_s=None,
              stop_on_divergence=False):
    """Run ``todo`` = [(cell, cmd, work_dir, snapshot or None)] with at most ``jobs``
    processes at a time, showing a progress bar over all cells and one line per running
    cell. SIGINT/SIGTERM are passed on to the running cells (each finishes its epoch, saves
    it and exits; a second signal stops them at once), no new cell starts, and the sweep ends
    with one line saying how to resume (``SystemExit(128 + signal)``). ``budget_s`` (wall
    time) and ``stop_on_divergence`` (the first cell that diverges) wind the sweep down the
    same way, but it ends normally, with its results written."""
    columns = (TextColumn('{task.description}'), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    failures, received, running, winding_down = 0, [], {}, []
    started, to_stop = time.time(), set()

    def wind_down(reason, progress):
        if not winding_down:
            winding_down.append(reason)
            progress.console.print(f'{reason}: stopping every running cell at the end of its '
                                   'epoch', highlight=False)
            to_stop.update(running)

    def stop_started_cells():
        # a trainer is told to stop once it trains (its record says so): one still
        # starting up has no signal handler yet and would die without a record
        for run in [r for r in to_stop if r.training()]:
            run.interrupt(signal.SIGTERM)
            to_stop.discard(run)

    def on_signal(signum, frame):
        received.append(signum)
        for run in running:
            run.interrupt(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Progress(*columns, refresh_per_second=2) as progress:
            overall = progress.add_task('sweep', total=total, completed=skipped)
            queue = list(todo)
            while queue or running:
                while queue and len(running) < jobs and not received and not winding_down:
                    cell, cmd, work_dir, snapshot = queue.pop(0)
                    try:
                        run = CellRun(cell, cmd, work_dir, threads, snapshot)
                    except CellLocked as err:
                        progress.console.print(f'{cell.name(None)}: NOT STARTED: {err}',
                                               highlight=False)
                        failures += 1
                        progress.advance(overall)
                        continue
                    running[run] = progress.add_task(f'  {cell.name(None)}', total=None)
                if (received or winding_down) and not running:
                    break
                if budget_s is not None and time.time() - started > budget_s:
                    wind_down(f'wall-time budget of {budget_s:.0f} s reached', progress)
                stop_started_cells()
                time.sleep(1.0)
                for run, task in list(running.items()):
                    done, max_epochs = run.epochs_done()
                    progress.update(task, completed=done, total=max_epochs)
                    code = run.poll()
                    if code is None:
                        continue
                    progress.remove_task(task)
                    del running[run]
                    to_stop.discard(run)
                    progress.advance(overall)
                    failures += _report(progress, run, code, bool(received or winding_down))
                    status = (read_json(osp.join(run.work_dir, RECORD_FILE)) or {}).get('status')
                    if stop_on_divergence and status == 'diverged':
                        wind_down(f'{run.cell.name(None)} diverged', progress)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        name = signal.Signals(received[0]).name
        print(f'sweep stopped by {name}: each running cell saved its last finished epoch; '
              f'resume with the same command{": " + resume_hint if resume_hint else ""}',
              flush=True)
        raise SystemExit(128 + received[0])
    return failures


def _report(progress, run, code, interrupted):
    """Print a finished cell's line; returns 1 for a failure (not for a cell stopped by a
    signal the sweep passed on)."""
    record = read_json(osp.join(run.work_dir, RECORD_FILE))
    wall = time.time() - run.start
    if code == 0 and record and record.get('status') in FINISHED:
        progress.console.print(f'{run.cell.name(None)}: {describe(record)} [{wall:.0f} s]',
                               highlight=False)
        return 0
    if interrupted:
        progress.console.print(f'{run.cell.name(None)}: stopped, {describe(record)}; resumes '
                               'from its last finished epoch', highlight=False)
        return 0
    progress.console.print(f'{run.cell.name(None)}: FAILED (exit code {code}); log '
                           f'{run.log_path}:\n{log_tail(run.log_path)}', highlight=False)
    return 1
