namespace NativeContrast.Cli.Commands;

using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using NativeContrast.Backends;
using NativeContrast.Checkpoints;
using NativeContrast.Cuda;
using NativeContrast.Nn;
using NativeContrast.Optim;
using NativeContrast.Tensors;

/// <summary>
/// `nativecontrast export-torchvision`: the proof that the engine's ResNet is torchvision's. Builds the engine's
/// ResNet (+ a classifier "fc"), initialises it with Philox, takes a few SGD steps on random data in training mode
/// (so the BatchNorm running statistics leave (0, 1) and eval mode is exercised), runs an eval-mode forward on a
/// random batch and writes encoder.safetensors + io.safetensors (<see cref="TorchvisionExport"/>). Then
/// <c>python3 bench/reference/torchvision_roundtrip.py --dir DIR</c> loads the weights into torchvision strictly and
/// compares the outputs.
/// </summary>
public static class ExportTorchvisionCommand
{
    public static Command Create()
    {
        var arch = new Option<string>("--arch") { Description = "torchvision architecture.", DefaultValueFactory = _ => "resnet18" };
        arch.AcceptOnlyFromAmong("resnet18", "resnet34", "resnet50");
        var stem = new Option<string>("--stem") { Description = "cifar: 3x3 stride-1 conv1 and no max pool; imagenet: torchvision's 7x7 stride-2 conv1 and max pool.", DefaultValueFactory = _ => "cifar" };
        stem.AcceptOnlyFromAmong("cifar", "imagenet");
        var output = new Option<string>("--out") { Description = "Folder to write encoder.safetensors and io.safetensors into.", Required = true };
        var device = DeviceOption.Create();
        var classes = new Option<int>("--classes") { Description = "Outputs of the fc classifier (0: export the encoder alone, no logits).", DefaultValueFactory = _ => 10 };
        var batch = new Option<int>("--batch") { Description = "Images per batch (training steps and the exported input).", DefaultValueFactory = _ => 4 };
        var size = new Option<int?>("--size") { Description = "Image side; by default 32 for the CIFAR stem, 64 for the ImageNet stem." };
        var steps = new Option<int>("--steps") { Description = "Training-mode SGD steps before the export (0: BatchNorm statistics stay at their initial (0, 1)).", DefaultValueFactory = _ => 3 };
        var seed = new Option<ulong>("--seed") { Description = "Philox seed of the initialisation and of the random data.", DefaultValueFactory = _ => 0 };
        var precision = new Option<string>("--precision") { Description = "Matmul precision of the backend's GEMMs (sets the round trip's tolerance).", DefaultValueFactory = _ => "fp32" };
        precision.AcceptOnlyFromAmong("fp32", "tf32");
        var command = new Command("export-torchvision", "Train the engine's ResNet a few steps, run it in eval mode and export weights + inputs/outputs for bench/reference/torchvision_roundtrip.py.")
        {
            arch, stem, output, device, classes, batch, size, steps, seed, precision,
        };
        command.SetAction(parse => Run(
            new Request(
                parse.GetRequiredValue(arch),
                parse.GetRequiredValue(stem),
                parse.GetRequiredValue(output),
                parse.GetRequiredValue(device),
                parse.GetRequiredValue(classes),
                parse.GetRequiredValue(batch),
                parse.GetValue(size),
                parse.GetRequiredValue(steps),
                parse.GetRequiredValue(seed),
                parse.GetRequiredValue(precision)),
            parse.InvocationConfiguration.Output,
            parse.InvocationConfiguration.Error));
        return command;
    }

    private sealed record Request(string Arch, string Stem, string Out, string Device, int Classes, int Batch, int? Size, int Steps, ulong Seed, string Precision)
    {
        public bool Cifar => Stem == "cifar";

        public int Side => Size ?? (Cifar ? 32 : 64);
    }

    private static int Run(Request request, TextWriter output, TextWriter error)
    {
        // Training-mode BatchNorm needs two values per channel; layer4 sees the image downsampled 8x (CIFAR) or 32x.
        var minimum = request.Cifar ? 8 : 32;
        if (request.Classes < 0 || request.Batch < 2 || request.Side < minimum || request.Steps < 0)
        {
            error.WriteLine($"error: --classes ({request.Classes}) and --steps ({request.Steps}) must be >= 0, --batch ({request.Batch}) >= 2 and --size ({request.Side}) >= {minimum} for the {request.Stem} stem");
            return Program.BadArguments;
        }
        if (DeviceOption.Open(request.Device, error) is not { } choice)
        {
            return Program.Failure;
        }
        using var backend = choice.Backend;
        backend.GemmPrecision = request.Precision == "tf32" ? MatmulPrecision.Tf32 : MatmulPrecision.Fp32;
        output.WriteLine($"backend    {choice.Reason}");
        var clock = Stopwatch.StartNew();
        var result = Export(backend, request);
        output.WriteLine($"model      {request.Arch}, {request.Stem} stem, fc {(request.Classes > 0 ? request.Classes.ToString(CultureInfo.InvariantCulture) : "none")}, {result.Parameters:N0} parameters");
        output.WriteLine($"trained    {request.Steps} SGD step(s) on random batches of {request.Batch}x3x{request.Side}x{request.Side}, loss {string.Join(" ", result.Losses.Select(l => l.ToString("F4", CultureInfo.InvariantCulture)))}");
        output.WriteLine($"exported   {Path.Combine(request.Out, TorchvisionExport.EncoderFileName)}, {Path.Combine(request.Out, TorchvisionExport.IoFileName)} ({request.Precision}, {clock.Elapsed.TotalSeconds:F1} s)");
        output.WriteLine($"check      python3 bench/reference/torchvision_roundtrip.py --dir {request.Out}");
        return Program.Success;
    }

    private sealed record Result(long Parameters, IReadOnlyList<float> Losses);

    private static Result Export(IBackend backend, Request request)
    {
        var options = (request.Arch switch
        {
            "resnet34" => ResNetOptions.ResNet34,
            "resnet50" => ResNetOptions.ResNet50,
            _ => ResNetOptions.ResNet18,
        }) with { Stem = request.Cifar ? ResNetStem.Cifar : ResNetStem.ImageNet };
        var layout = new ArenaLayout();
        var encoder = new ResNet(layout, options);
        // Without a classifier the encoder is trained through a stand-in head that is not exported.
        var classes = Math.Max(request.Classes, 2);
        var head = LinearHead.Classifier(layout, encoder.FeatureDim, classes, request.Classes > 0 ? "fc" : "probe");
        using var model = new Sequential(encoder, head);
        using var arena = new ParameterArena(backend, layout, optimizerStateSlots: 1);
        model.Bind(arena);
        model.Initialize(request.Seed);

        var batch = request.Batch;
        var side = request.Side;
        var nhwc = new TensorShape(batch, side, side, options.InputChannels);
        var nchw = new TensorShape(batch, options.InputChannels, side, side);
        using var images = backend.Allocate(nhwc, "images");
        using var input = backend.Allocate(nchw, "input (NCHW)");
        using var labels = backend.Allocate(new TensorShape(batch), "labels");
        using var loss = new SoftmaxCrossEntropy(backend, batch, classes);
        using var sgd = new Sgd(arena, learningRate: 0.01f, momentum: 0.9f, weightDecay: 1e-4f);
        var plan = model.PlanFor(nhwc);
        var offset = 0UL;
        var losses = new List<float>();
        var scalar = new float[1];
        for (var step = 0; step < request.Steps; step++)
        {
            NextImages(backend, input, images, request.Seed, offset++);
            backend.RandomUniform(labels, request.Seed, offset++);
            var host = new float[batch];
            backend.CopyToHost(labels, host);
            backend.CopyFromHost(host.Select(u => MathF.Min(MathF.Floor(u * classes), classes - 1)).ToArray(), labels);
            sgd.ZeroGradients();
            var logits = plan.Forward(images, training: true);
            backend.CopyToHost(loss.Forward(logits, labels), scalar);
            losses.Add(scalar[0]);
            plan.Backward(loss.Backward(logits, labels));
            sgd.Step();
        }

        NextImages(backend, input, images, request.Seed, offset);
        var output = plan.Forward(images, training: false);
        var features = model.OutputOf(plan, 0);
        var spec = new TorchvisionModelSpec(request.Arch, request.Cifar, options.InputChannels);
        var scope = request.Classes > 0 ? TensorScope.All : TensorScope.All.Excluding("probe.");
        TorchvisionExport.Write(request.Out, arena, spec, input, features, request.Classes > 0 ? output : null, scope, request.Steps, request.Precision);
        return new Result(arena.Views.Where(v => v.IsTrainable && scope.Covers(v.Name)).Sum(v => v.Shape.Length), losses);
    }

    /// <summary>A Philox N(0, 1) batch in torchvision's NCHW layout, and the same images in the engine's NHWC.</summary>
    private static void NextImages(IBackend backend, Tensor nchw, Tensor nhwc, ulong seed, ulong offset)
    {
        backend.RandomNormal(nchw, seed, offset);
        var source = new float[nchw.Length];
        backend.CopyToHost(nchw, source);
        var (n, c, h, w) = (nchw.Shape[0], nchw.Shape[1], nchw.Shape[2], nchw.Shape[3]);
        var target = new float[source.Length];
        for (var i = 0; i < n; i++)
        {
            for (var ch = 0; ch < c; ch++)
            {
                for (var p = 0; p < h * w; p++)
                {
                    target[(((i * h * w) + p) * c) + ch] = source[(((i * c) + ch) * h * w) + p];
                }
            }
        }
        backend.CopyFromHost(target, nhwc);
    }
}
