namespace NativeContrast.Data;

using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;

/// <summary>A published file: where to get it and its published MD5 (the checksum torchvision checks too).</summary>
public sealed record DataResource(string FileName, string Md5, IReadOnlyList<string> Urls);

/// <summary>Downloads into the cache folder, checks the MD5, and unpacks tar.gz archives member by member.</summary>
public static class Downloads
{
    private const string FashionBase = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";
    private const string MnistBase = "https://yann.lecun.com/exdb/mnist/";
    private const string MnistMirror = "https://ossci-datasets.s3.amazonaws.com/mnist/";

    public static readonly IReadOnlyList<DataResource> FashionMnist =
    [
        new("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", [FashionBase + "train-images-idx3-ubyte.gz"]),
        new("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", [FashionBase + "train-labels-idx1-ubyte.gz"]),
        new("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", [FashionBase + "t10k-images-idx3-ubyte.gz"]),
        new("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", [FashionBase + "t10k-labels-idx1-ubyte.gz"]),
    ];

    public static readonly IReadOnlyList<DataResource> Mnist =
    [
        new("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", [MnistBase + "train-images-idx3-ubyte.gz", MnistMirror + "train-images-idx3-ubyte.gz"]),
        new("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", [MnistBase + "train-labels-idx1-ubyte.gz", MnistMirror + "train-labels-idx1-ubyte.gz"]),
        new("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", [MnistBase + "t10k-images-idx3-ubyte.gz", MnistMirror + "t10k-images-idx3-ubyte.gz"]),
        new("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", [MnistBase + "t10k-labels-idx1-ubyte.gz", MnistMirror + "t10k-labels-idx1-ubyte.gz"]),
    ];

    public static readonly DataResource Cifar10 = new("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530", ["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]);

    public static readonly DataResource Cifar100 = new("cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8", ["https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"]);

    public static readonly DataResource Stl10 = new("stl10_binary.tar.gz", "91f7769df0f17e558f3565bffb0c7dfb", ["http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"]);

    /// <summary>
    /// Puts <paramref name="resource"/> into <paramref name="directory"/> (kept when already there with the right MD5)
    /// and returns its path; throws an IOException that names the file, the addresses tried and why they failed.
    /// </summary>
    public static string Fetch(DataResource resource, string directory, Action<string>? log = null)
    {
        Directory.CreateDirectory(directory);
        var path = Path.Combine(directory, resource.FileName);
        if (File.Exists(path) && Md5Of(path) == resource.Md5)
        {
            return path;
        }
        var failures = new List<string>();
        using var client = new HttpClient(new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(15) }) { Timeout = TimeSpan.FromHours(2) };
        foreach (var url in resource.Urls)
        {
            var partial = path + ".part";
            try
            {
                log?.Invoke($"downloading {url}");
                using (var response = client.GetAsync(url, HttpCompletionOption.ResponseHeadersRead).GetAwaiter().GetResult())
                {
                    response.EnsureSuccessStatusCode();
                    using var body = response.Content.ReadAsStream();
                    using var file = File.Create(partial);
                    body.CopyTo(file, 1 << 20);
                }
                var md5 = Md5Of(partial);
                if (md5 != resource.Md5)
                {
                    failures.Add($"{url}: MD5 {md5}, expected {resource.Md5}");
                    File.Delete(partial);
                    continue;
                }
                File.Move(partial, path, overwrite: true);
                return path;
            }
            catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException)
            {
                failures.Add($"{url}: {e.Message}");
                if (File.Exists(partial))
                {
                    File.Delete(partial);
                }
            }
        }
        throw new IOException($"could not download {resource.FileName} into {directory} ({string.Join("; ", failures)})");
    }

    /// <summary>Extracts the regular files of a .tar.gz whose names start with <paramref name="prefix"/>, refusing paths that leave <paramref name="directory"/>.</summary>
    public static void ExtractTarGz(string archive, string directory, string prefix, Action<string>? log = null)
    {
        var root = Path.GetFullPath(directory);
        using var file = File.OpenRead(archive);
        using var gzip = new GZipStream(file, CompressionMode.Decompress);
        using var tar = new TarReader(gzip);
        try
        {
            for (var entry = tar.GetNextEntry(); entry is not null; entry = tar.GetNextEntry())
            {
                if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile) || !entry.Name.StartsWith(prefix, StringComparison.Ordinal))
                {
                    continue;
                }
                var target = Path.GetFullPath(Path.Combine(root, entry.Name));
                if (!target.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                {
                    throw new DataFormatException(archive, $"member {entry.Name} would extract outside {root}");
                }
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                log?.Invoke($"extracting {entry.Name}");
                entry.ExtractToFile(target, overwrite: true);
            }
        }
        catch (InvalidDataException e)
        {
            throw new DataFormatException(archive, $"corrupt archive ({e.Message})");
        }
    }

    public static string Md5Of(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(MD5.HashData(stream));
    }
}
