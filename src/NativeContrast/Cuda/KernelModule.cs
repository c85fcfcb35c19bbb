namespace NativeContrast.Cuda;

/// <summary>
/// The engine's kernels: one fatbin built by CMake from native/*.cu. Found from NATIVECONTRAST_KERNELS, else next
/// to the engine's assembly, else under a build/ folder above it (a source checkout). Functions are looked up once.
/// </summary>
public sealed class KernelModule : IDisposable
{
    public const string FileName = "nativecontrast.fatbin";
    public const string EnvironmentVariable = "NATIVECONTRAST_KERNELS";

    private readonly Dictionary<string, CudaKernel> _kernels = [];
    private IntPtr _module;

    private unsafe KernelModule(string path)
    {
        Path = path;
        var image = File.ReadAllBytes(path);
        fixed (byte* data = image)
        {
            CudaCheck.Driver(DriverApi.cuModuleLoadData(out _module, data), $"cuModuleLoadData({path})");
        }
    }

    public string Path { get; }

    /// <summary>The module file this process would load, or null.</summary>
    public static string? Locate() => Locate(Environment.GetEnvironmentVariable(EnvironmentVariable), AppContext.BaseDirectory);

    /// <summary>Null when <see cref="Locate()"/> finds the module, else the one-line reason it does not.</summary>
    public static string? WhyNotFound() => WhyNotFound(Environment.GetEnvironmentVariable(EnvironmentVariable), AppContext.BaseDirectory);

    /// <summary>
    /// The search, given the variable's value and the assembly's folder: a set variable decides alone (a wrong path
    /// is an error, not a reason to load some other build); else beside the assembly (a publish, a build output);
    /// else build/native/ in the folder or any folder above it (a source checkout).
    /// </summary>
    internal static string? Locate(string? fromEnvironment, string baseDirectory)
    {
        if (!string.IsNullOrEmpty(fromEnvironment))
        {
            return File.Exists(fromEnvironment) ? System.IO.Path.GetFullPath(fromEnvironment) : null;
        }
        var beside = System.IO.Path.Combine(baseDirectory, FileName);
        if (File.Exists(beside))
        {
            return beside;
        }
        for (var dir = new DirectoryInfo(baseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = System.IO.Path.Combine(dir.FullName, "build", "native", FileName);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        return null;
    }

    internal static string? WhyNotFound(string? fromEnvironment, string baseDirectory)
    {
        if (Locate(fromEnvironment, baseDirectory) is not null)
        {
            return null;
        }
        return string.IsNullOrEmpty(fromEnvironment)
            ? $"no kernel module: {FileName} is neither beside {baseDirectory} nor in a build/native/ folder above it (set {EnvironmentVariable}, or build with nvcc and CMake on PATH)"
            : $"no kernel module: {EnvironmentVariable} names {fromEnvironment}, which does not exist";
    }

    /// <summary>Loads the module into the current context.</summary>
    public static KernelModule Load()
    {
        var path = Locate();
        return path is null ? throw new FileNotFoundException(WhyNotFound()) : new KernelModule(path);
    }

    /// <summary>The kernel with this extern "C" name; a missing one names the module to rebuild.</summary>
    public CudaKernel this[string name]
    {
        get
        {
            ObjectDisposedException.ThrowIf(_module == IntPtr.Zero, this);
            if (_kernels.TryGetValue(name, out var kernel))
            {
                return kernel;
            }
            var result = DriverApi.cuModuleGetFunction(out var function, _module, name);
            if (result != DriverApi.Success)
            {
                var (errorName, _) = CudaCheck.DriverError(result);
                throw new CudaException($"cuModuleGetFunction({name})", result, errorName, $"kernel '{name}' is not in {Path}; rebuild the kernels");
            }
            kernel = new CudaKernel(name, function);
            _kernels[name] = kernel;
            return kernel;
        }
    }

    public void Dispose()
    {
        if (_module != IntPtr.Zero)
        {
            _ = DriverApi.cuModuleUnload(_module);
            _module = IntPtr.Zero;
        }
    }
}

/// <summary>Grid or block dimensions.</summary>
public readonly record struct Dim3(uint X, uint Y = 1, uint Z = 1)
{
    public static implicit operator Dim3(int x) => new(checked((uint)x));

    public static implicit operator Dim3(uint x) => new(x);

    public override string ToString() => $"({X}, {Y}, {Z})";
}

/// <summary>
/// One kernel. Launch takes a stack-allocated array of pointers to the arguments, so a launch allocates nothing:
/// <code>ulong x = ptr; int n = count; void** args = stackalloc void*[] { &amp;x, &amp;n }; kernel.Launch(grid, block, 0, stream, args);</code>
/// Launch failures name the kernel. Set NATIVECONTRAST_SYNC_LAUNCH=1 to synchronise after every launch so that
/// an asynchronous fault is reported against the kernel that caused it.
/// </summary>
public sealed unsafe class CudaKernel
{
    internal static readonly bool SynchronizeEachLaunch = Environment.GetEnvironmentVariable("NATIVECONTRAST_SYNC_LAUNCH") == "1";

    private int _dynamicSharedLimit = 48 * 1024;

    internal CudaKernel(string name, IntPtr function)
    {
        Name = name;
        Function = function;
    }

    public string Name { get; }

    internal IntPtr Function { get; }

    public void Launch(Dim3 grid, Dim3 block, int sharedBytes, CudaStream stream, void** arguments)
    {
        EnsureSharedMemory(sharedBytes);
        stream.Launches.Record(Name, grid);
        var result = DriverApi.cuLaunchKernel(Function, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, (uint)sharedBytes, stream.Handle, arguments, null);
        Completed(result, grid, block, sharedBytes, stream);
    }

    /// <summary>A cooperative launch (grid-wide synchronisation); the grid must fit on the device at once.</summary>
    public void LaunchCooperative(Dim3 grid, Dim3 block, int sharedBytes, CudaStream stream, void** arguments)
    {
        EnsureSharedMemory(sharedBytes);
        stream.Launches.Record(Name, grid);
        var result = DriverApi.cuLaunchCooperativeKernel(Function, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, (uint)sharedBytes, stream.Handle, arguments);
        Completed(result, grid, block, sharedBytes, stream);
    }

    /// <summary>Blocks of this kernel that fit on one multiprocessor at once, for sizing persistent or cooperative grids.</summary>
    public int MaxActiveBlocksPerMultiprocessor(int blockSize, int sharedBytes)
    {
        EnsureSharedMemory(sharedBytes);
        CudaCheck.Driver(DriverApi.cuOccupancyMaxActiveBlocksPerMultiprocessor(out var blocks, Function, blockSize, (nuint)sharedBytes), $"cuOccupancyMaxActiveBlocksPerMultiprocessor({Name})");
        return blocks;
    }

    private void EnsureSharedMemory(int sharedBytes)
    {
        // Above 48 KiB of dynamic shared memory a kernel must opt in, once.
        if (sharedBytes > _dynamicSharedLimit)
        {
            CudaCheck.Driver(DriverApi.cuFuncSetAttribute(Function, DriverApi.FuncAttributeMaxDynamicSharedSizeBytes, sharedBytes), $"cuFuncSetAttribute({Name}, max dynamic shared = {sharedBytes})");
            _dynamicSharedLimit = sharedBytes;
        }
    }

    private void Completed(int result, Dim3 grid, Dim3 block, int sharedBytes, CudaStream stream)
    {
        if (result == DriverApi.Success && SynchronizeEachLaunch && !stream.IsCapturing)
        {
            result = DriverApi.cuStreamSynchronize(stream.Handle);
        }
        if (result != DriverApi.Success)
        {
            // A lost context may come from an earlier kernel whose fault surfaces at this launch: the detail says so.
            var (errorName, text) = CudaCheck.DriverError(result);
            throw new KernelLaunchException(Name, $"grid {grid} block {block} shared {sharedBytes} B", result, errorName, CudaCheck.StreamFailure(text, result, stream));
        }
    }
}
