namespace NativeContrast.Cli.Commands;

using System.CommandLine;
using System.Text;
using NativeContrast.Backends;
using NativeContrast.Distributed;
using NativeContrast.Tensors;

/// <summary>
/// `nativecontrast collectives-check`: runs every collective of the communicator the launcher's environment selects
/// on rank-dependent data of each size; rank 0 prints one line per rank saying what it checked, OK or FAILED with the
/// first wrong element; exit code 1 on a rank where anything failed. Launched alone it checks the single-process communicator;
/// under `mpirun -np N` (or srun) MPI between CPU ranks, or NCCL with --device cuda (each rank on the GPU of its
/// local rank). --fail-rank R makes rank R fail after the first collective, to check that the job ends, naming it.
/// </summary>
public static class CollectivesCheckCommand
{
    public static Command Create()
    {
        var device = new Option<string>("--device")
        {
            Description = "cpu: MPI between CPU ranks; cuda: NCCL between GPU ranks, each on the GPU of its local rank.",
            DefaultValueFactory = _ => "cpu",
        };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var sizes = new Option<int[]>("--sizes")
        {
            Description = "Floats per rank of each check (awkward sizes catch partial chunks).",
            DefaultValueFactory = _ => [7, 1_000_003],
            AllowMultipleArgumentsPerToken = true,
        };
        sizes.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int[]>() is { } values && values.Any(n => n < 1))
            {
                result.AddError("--sizes: every size must be at least 1");
            }
        });
        var failRank = new Option<int?>("--fail-rank") { Description = "Make this rank fail after the first collective.", Hidden = true };
        var failMode = new Option<string>("--fail-mode")
        {
            Description = "How --fail-rank fails: abort (the communicator's abort) or exit (the process ends without a word).",
            DefaultValueFactory = _ => "abort",
            Hidden = true,
        };
        failMode.AcceptOnlyFromAmong("abort", "exit");
        var command = new Command("collectives-check", "Check every collective (all-reduce, all-gather, reduce-scatter, broadcast, barrier) across the ranks of an mpirun or srun job, or of this process alone.")
        {
            device, sizes, failRank, failMode,
        };
        command.SetAction(parse => Run(
            parse.GetRequiredValue(device), parse.GetRequiredValue(sizes), parse.GetValue(failRank), parse.GetRequiredValue(failMode),
            parse.InvocationConfiguration.Output, parse.InvocationConfiguration.Error));
        return command;
    }

    private static int Run(string device, int[] sizes, int? failRank, string failMode, TextWriter output, TextWriter error)
    {
        var launch = LaunchEnvironment.Read();
        // The same choice as train's: the local rank's GPU, refused with the reason when the node has too few.
        if (DeviceOption.Open(device, launch, error) is not { Backend: var backend })
        {
            return Program.Failure;
        }
        using (backend)
        {
            using var communicator = Communicators.Create(backend, launch).Communicator;
            var checks = new Checks(communicator, backend);
            IReadOnlyList<string> lines = [];
            try
            {
                checks.Run(sizes, () =>
                {
                    if (failRank == communicator.Rank)
                    {
                        if (failMode == "exit")
                        {
                            Environment.Exit(3);
                        }
                        throw new InvalidOperationException($"injected failure (--fail-rank {failRank})");
                    }
                });
                lines = OnRankZero(communicator, $"rank {communicator.Rank} of {communicator.Size}, {communicator.Name} on {backend.Name}: {string.Join("; ", checks.Results)}");
            }
            catch (Exception e) when (e is not CommunicatorAbortedException)
            {
                communicator.Abort($"collectives-check: {e.Message}");
            }
            foreach (var line in lines)
            {
                output.WriteLine(line);
            }
            return checks.Failed ? Program.Failure : Program.Success;
        }
    }

    /// <summary>
    /// Every rank's line, in rank order, on rank 0 (none elsewhere). One process prints them all: mpirun forwards each
    /// rank's output in the pieces the rank wrote it, so lines printed by several ranks can interleave mid-line.
    /// </summary>
    private static List<string> OnRankZero(ICommunicator communicator, string line)
    {
        var lines = new List<string>();
        for (var root = 0; root < communicator.Size; root++)
        {
            var text = root == communicator.Rank ? Encoding.UTF8.GetBytes(line) : Array.Empty<byte>();
            var length = BitConverter.GetBytes(text.Length);
            communicator.Broadcast(length, root);
            if (root != communicator.Rank)
            {
                text = new byte[BitConverter.ToInt32(length)];
            }
            communicator.Broadcast(text, root);
            if (communicator.Rank == 0)
            {
                lines.Add(Encoding.UTF8.GetString(text));
            }
        }
        return lines;
    }

    /// <summary>Each collective on data whose expected result is exact in fp32 (the mean's one multiplication aside).</summary>
    private sealed class Checks(ICommunicator communicator, IBackend backend)
    {
        private int Rank => communicator.Rank;

        private int Size => communicator.Size;

        public List<string> Results { get; } = [];

        public bool Failed { get; private set; }

        public void Run(int[] sizes, Action afterFirst)
        {
            Each("all-reduce", sizes, n =>
            {
                using var x = Upload(n, i => Rank + 1 + (i % 7));
                communicator.AllReduce(x);
                return Compare(Download(x), i => (Size * (Size + 1) / 2) + (Size * (i % 7)), exact: true);
            });
            afterFirst();
            Each("all-reduce-mean", sizes, n =>
            {
                using var x = Upload(n, i => (2 * Rank) + (i % 5));
                communicator.AllReduceMean(x);
                return Compare(Download(x), i => Size - 1 + (i % 5), exact: false);
            });
            Each("all-gather", sizes, n =>
            {
                using var x = Upload(n, i => Rank + ((i % 1024) / 1024f));
                using var gathered = backend.Allocate(new TensorShape(Size * n), "gathered");
                communicator.AllGather(x, gathered);
                return Compare(Download(gathered), k => (k / n) + ((k % n % 1024) / 1024f), exact: true);
            });
            Each("reduce-scatter", sizes, n =>
            {
                using var x = Upload(Size * n, k => Rank + (k % 13));
                using var block = backend.Allocate(new TensorShape(n), "block");
                communicator.ReduceScatter(x, block);
                return Compare(Download(block), i => (Size * (Size - 1) / 2) + (Size * (((Rank * n) + i) % 13)), exact: true);
            });
            var root = Size - 1;
            Each($"broadcast from rank {root}", sizes, n =>
            {
                using var x = Upload(n, i => Rank == root ? (i % 97) + 0.5f : -1f);
                communicator.Broadcast(x, root);
                return Compare(Download(x), i => (i % 97) + 0.5f, exact: true);
            });
            var bytes = new byte[33];
            if (Rank == 0)
            {
                for (var i = 0; i < bytes.Length; i++)
                {
                    bytes[i] = (byte)((7 * i) + 1);
                }
            }
            communicator.Broadcast(bytes, root: 0);
            var wrong = Enumerable.Range(0, bytes.Length).FirstOrDefault(i => bytes[i] != (byte)((7 * i) + 1), -1);
            Record($"broadcast of {bytes.Length} host bytes from rank 0", wrong < 0 ? null : $"byte {wrong} is {bytes[wrong]}, expected {(byte)((7 * wrong) + 1)}");
            communicator.Barrier();
            Record("barrier", null);
        }

        /// <summary>"name 7 OK, 1000003 OK", or FAILED with the first wrong element.</summary>
        private void Each(string name, int[] sizes, Func<int, string?> check) =>
            Results.Add($"{name} {string.Join(", ", sizes.Select(n => Outcome($"{n}", check(n))))}");

        private void Record(string name, string? failure) => Results.Add(Outcome(name, failure));

        private string Outcome(string what, string? failure)
        {
            Failed |= failure is not null;
            return failure is null ? $"{what} OK" : $"{what} FAILED ({failure})";
        }

        private Tensor Upload(int length, Func<int, float> value)
        {
            var host = new float[length];
            for (var i = 0; i < length; i++)
            {
                host[i] = value(i);
            }
            var tensor = backend.Allocate(new TensorShape(length), "x");
            backend.CopyFromHost(host, tensor);
            return tensor;
        }

        private float[] Download(Tensor tensor)
        {
            var host = new float[tensor.Length];
            backend.CopyToHost(tensor, host);
            return host;
        }

        /// <summary>Null when every element is the expected one (within 1e-6 relative when not exact), else the first that is not.</summary>
        private static string? Compare(float[] actual, Func<int, float> expected, bool exact)
        {
            for (var i = 0; i < actual.Length; i++)
            {
                var want = expected(i);
                if (exact ? actual[i] != want : Math.Abs(actual[i] - want) > 1e-6f * Math.Max(1f, Math.Abs(want)))
                {
                    return $"element {i} is {actual[i]}, expected {want}";
                }
            }
            return null;
        }
    }
}
