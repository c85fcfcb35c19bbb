namespace NativeContrast.Tests.Training;

using NativeContrast.Backends;
using NativeContrast.Checkpoints;
using NativeContrast.Data;
using NativeContrast.Eval;
using NativeContrast.Losses;
using NativeContrast.Methods;
using NativeContrast.Nn;
using NativeContrast.Optim;
using NativeContrast.Tensors;
using NativeContrast.Tests.Losses;
using NativeContrast.Tests.Nn;
using NativeContrast.Tests.Support;
using NativeContrast.Training;

/// <summary>Supervised training, fine-tuning from a SimCLR v2 run, the classifier evaluation hook and distillation on the CPU.</summary>
public class SupervisedTests
{
    private string _folder = "";

    [SetUp]
    public void CreateFolder() => _folder = TempFolder.Create("supervised");

    [TearDown]
    public void DeleteFolder() => TempFolder.Delete(_folder);

    /// <summary>
    /// A backbone and a method bound to one arena on the CPU, as the trainer assembles them, with a fixed batch of 8; on
    /// <paramref name="backend"/> when given (the caller keeps it), else on a backend of its own.
    /// </summary>
    private sealed class Assembly : IDisposable
    {
        public const int Batch = 8;

        private readonly bool _ownsBackend;

        public Assembly(Method method, CpuBackend? backend = null)
        {
            _ownsBackend = backend is null;
            Backend = backend ?? new CpuBackend();
            var layout = new ArenaLayout();
            Backbone = new ResNet(layout, TinyRun.Backbone, "backbone");
            Method = method;
            method.Build(layout, Backbone);
            Arena = new ParameterArena(Backend, layout, optimizerStateSlots: 1);
            Backbone.Bind(Arena);
            method.Bind(Arena);
            Backbone.Initialize(1);
            method.Initialize(1);
            method.Prepare(new MethodContext(Backend, Backbone, AugmentationPresets.SupervisedCifar(16), Batch, 3, 1));
            Views = Numerics.RandomTensor(Backend, new TensorShape(Batch, 16, 16, 3), seed: 5);
            Views.Layout = ImageLayout.Nhwc;
            Optimizer = new Sgd(Arena, learningRate: 0.05f, momentum: 0.9f);
        }

        public CpuBackend Backend { get; }

        public ResNet Backbone { get; }

        public Method Method { get; }

        public ParameterArena Arena { get; }

        public Tensor Views { get; }

        public Sgd Optimizer { get; }

        public ContrastiveStats Step(int[] labels, long step)
        {
            Optimizer.ZeroGradients();
            var indices = Enumerable.Range(100, Batch).ToArray();
            var stats = ContrastiveStats.Read(Backend, Method.TrainingStep(new ViewGroups([Views], [1], Batch, step, indices, labels)));
            Optimizer.Step();
            return stats;
        }

        public void Dispose()
        {
            Optimizer.Dispose();
            Views.Dispose();
            Method.Dispose();
            Backbone.Dispose();
            Arena.Dispose();
            if (_ownsBackend)
            {
                Backend.Dispose();
            }
        }
    }

    [Test]
    public void ASupervisedStepLowersTheCrossEntropyOnAFixedBatch()
    {
        using var run = new Assembly(new Supervised(new SupervisedOptions { Classes = 10, Augmentations = "supervised-cifar" }));
        int[] labels = [3, 1, 4, 1, 5, 9, 2, 6];
        var steps = Enumerable.Range(0, 12).Select(step => run.Step(labels, step)).ToList();
        Assert.That(steps[0].Loss, Is.EqualTo(Math.Log(10)).Within(0.7), "an untrained classifier is near ln(classes)");
        Assert.That(steps[^1].Loss, Is.LessThan(steps[0].Loss * 0.5f), $"losses {string.Join(", ", steps.Select(s => s.Loss))}");
        Assert.That(steps[^1].Top1Accuracy, Is.EqualTo(1f), "the batch is learnt");
        Assert.That(steps.Select(s => s.PositiveSimilarity), Is.All.NaN, "no pairs, no cosine");
        var e = Assert.Throws<InvalidOperationException>(() => run.Step([3, 1, 4, -1, 5, 9, 2, 6], 12));
        Assert.That(e!.Message, Does.Contain("image 103 has label -1"));
    }

    [Test]
    public void TheClassifierEvaluationGivesAKnownAnswerInEvalMode()
    {
        // features → Linear (identity) → BatchNorm on running statistics (mean (10, −10), var 1) → classifier
        // logits (y0, y1, 0). Training-mode BatchNorm would standardise each batch of 2 and predict otherwise.
        using var t = new Harness();
        var head = new MlpHead(t.Layout, new MlpHeadOptions(2, 2, 2) { Layers = 1, OutputBatchNorm = true });
        var linear = LinearHead.Classifier(t.Layout, 2, 3, "classifier");
        var chain = new Sequential(head, linear);
        t.CreateArena();
        chain.Bind(t.Arena);
        chain.Initialize(1);
        void Set(string name, float[] values) => t.Backend.CopyFromHost(values, t.Arena.Value(t.Arena[name]));
        Set("projector.0.weight", [1, 0, 0, 1]);
        Set("projector.1.running_mean", [10, -10]);
        Set("projector.1.running_var", [1, 1]);
        Set("classifier.weight", [1, 0, 0, 1, 0, 0]);
        Set("classifier.bias", [0, 0, 0]);
        // Rows → (y0, y1): (2, 0) class 0 ✓; (0, 3) class 1 ✓; (−1, −1) class 2 ✓; (1, 1) a tie → class 0, label 1 ✗;
        // (−2, 1) class 1, label 0 second to last ✗. Five rows in batches of 2: the last one padded.
        var features = new FeatureSet([12, -10, 10, -7, 9, -11, 11, -9, 8, -9], [0, 1, 2, 1, 0], 2);
        var accuracy = ClassifierAccuracy.Evaluate(chain, features, batchSize: 2);
        Assert.That(accuracy, Is.EqualTo(new Accuracy(3 / 5.0, 1.0, 5)));
        Assert.That(ClassifierAccuracy.Rank([0.5f, 2f, 2f, -1f], 2), Is.EqualTo(1), "a tie goes to the lower index");
        Assert.That(ClassifierAccuracy.Rank([0.5f, 2f, float.NaN], 2), Is.EqualTo(3), "a NaN logit ranks last");
        Assert.That(ClassifierAccuracy.Rank([0.5f, 2f], -1), Is.EqualTo(2), "an unlabelled image ranks last");
    }

    [Test]
    public void TheTrainerScoresTheMethodsClassifierOnTheTestSplitEveryEpoch()
    {
        using var run = new TinyRun(_folder, epochs: 2);
        run.Options = run.Options with { Optimizer = "sgd", Labels = LabelBudget.Parse("50%"), LabelsSeed = 7, KnnEveryEpochs = 0 };
        using var trainer = run.CreateTrainer(new Supervised(new SupervisedOptions { Classes = 10, Augmentations = "supervised-cifar" }));
        Assert.That(trainer.Train.Count, Is.EqualTo(30), "3 of the 6 or 7 images of each class");
        Assert.That(trainer.Spec.Labels, Is.EqualTo("50%"));
        Assert.That(trainer.Spec.LabelsSeed, Is.EqualTo(7));
        Assert.That(trainer.Spec.BuiltinImages, Is.EqualTo(64), "the split's size, to render it again");
        var observer = new RecordingObserver();
        var result = trainer.Run(observer);
        Assert.That(observer.Epochs.Select(e => e.Classifier?.Count), Is.All.EqualTo(24), "every test image, the last partial batch included");
        Assert.That(observer.Epochs[0].Knn, Is.Null, "the kNN monitor only after the last epoch");
        Assert.That(result.Classifier, Is.EqualTo(observer.Epochs[^1].Classifier));
        var recomputed = ClassifierAccuracy.Evaluate(trainer.Method.Classifier!, new FeatureExtractor(trainer.Backbone, run.Train.Stats).Extract(run.Test));
        Assert.That(result.Classifier, Is.EqualTo(recomputed));
        Assert.That(observer.Messages, Has.Some.StartWith("classifier on builtin/test"));
        var epochs = File.ReadLines(Path.Combine(_folder, MetricsLog.FileName)).Where(l => l.Contains("\"type\":\"epoch\"", StringComparison.Ordinal)).ToList();
        Assert.That(epochs, Has.Count.EqualTo(2).And.All.Contain("\"test_top1\":").And.All.Contain("\"test_top5\":"));

        // The checkpoint's classifier, loaded on its own, scores the same.
        using var loaded = TrainedClassifier.Load(_folder, run.Backend);
        Assert.That(loaded.Classes, Is.EqualTo(10));
        var again = ClassifierAccuracy.Evaluate(loaded.Classifier, new FeatureExtractor(loaded.Backbone, loaded.Spec.Normalization).Extract(run.Test));
        Assert.That(again, Is.EqualTo(recomputed));
    }

    [Test]
    public void FineTuningLoadsExactlyTheCheckpointsBackboneAndHeadLayers()
    {
        var pretrained = Pretrain(Path.Combine(_folder, "simclr-v2"));
        Assert.That(pretrained.Projector, Is.EqualTo(new MlpHeadOptions(64, 64, 128) { Layers = 3, HiddenBatchNorm = true, OutputBatchNorm = true }));
        Assert.That(pretrained.HeadLayers(0), Is.Null);
        Assert.That(pretrained.HeadLayers(1), Is.EqualTo(new MlpHeadOptions(64, 64, 64) { Layers = 1, HiddenBatchNorm = true, OutputBatchNorm = true, OutputRelu = true }));
        Assert.That(() => pretrained.HeadLayers(4), Throws.ArgumentException.With.Message.Contains("--from-head-layer 4 is beyond").And.Message.Contains("3 layers"));

        using var run = new TinyRun(null, epochs: 1);
        run.Options = run.Options with { Optimizer = "sgd", Labels = LabelBudget.Parse("50%") };
        using var trainer = run.CreateTrainer(FineTune(pretrained, layers: 1));
        pretrained.Load(trainer.Arena);
        using var file = SafetensorsFile.Open(pretrained.Path);
        var loaded = 0;
        foreach (var view in trainer.Arena.Views)
        {
            var values = Numerics.ToArray(run.Backend, trainer.Arena.Value(view));
            if (view.Name.StartsWith("classifier.", StringComparison.Ordinal))
            {
                Assert.That(values, Is.All.EqualTo(0f), $"{view.Name}: the new classifier starts at zero");
                continue;
            }
            Assert.That(view.Name, Does.StartWith("backbone.").Or.StartWith("projector.0.").Or.StartWith("projector.1."));
            var expected = ModelCheckpoint.IsBatchNormCounter(trainer.Arena, view) ? [.. file.ReadInt64(view.Name).Select(v => (float)v)] : file.ReadFloat32(view.Name);
            Assert.That(values, Is.EqualTo(expected), view.Name);
            loaded++;
        }
        Assert.That(loaded, Is.EqualTo(trainer.Arena.Views.Count - 2));
        Assert.That(trainer.Arena.Contains("projector.3.weight"), Is.False, "the deeper head layers stay behind");
        Assert.That(file.Contains("projector.3.weight"), Is.True);
    }

    [Test]
    public void FineTuningResumedMidEpochEqualsTheUninterruptedRunBitForBit()
    {
        var pretrained = Pretrain(Path.Combine(_folder, "simclr-v2"));
        var folder = Path.Combine(_folder, "finetune");
        TinyRun Run(string? output)
        {
            var run = new TinyRun(output, epochs: 3, trainImages: 128);
            run.Options = run.Options with { Optimizer = "sgd", Labels = LabelBudget.Parse("50%"), KnnEveryEpochs = 0, WarmupEpochs = 0 };
            return run;
        }

        float[] values, state;
        List<float> losses;
        using (var run = Run(null))
        using (var trainer = run.CreateTrainer(FineTune(pretrained, layers: 1)))
        {
            Assert.That(trainer.StepsPerEpoch, Is.EqualTo(3), "60 labelled images in batches of 16");
            pretrained.Load(trainer.Arena);
            var observer = new RecordingObserver();
            trainer.Run(observer);
            values = trainer.Arena.Values.Span.ToArray();
            state = trainer.Arena.OptimizerState.Span.ToArray();
            losses = [.. observer.Steps.Select(s => s.Loss)];
        }

        using var cancel = new CancellationTokenSource();
        using (var run = Run(folder))
        using (var trainer = run.CreateTrainer(FineTune(pretrained, layers: 1)))
        {
            pretrained.Load(trainer.Arena);
            Assert.That(trainer.Run(new RecordingObserver(4, cancel.Cancel), cancel.Token).Interrupted, Is.True);
        }
        using (var run = Run(folder))
        using (var trainer = run.CreateTrainer(FineTune(pretrained, layers: 1)))
        {
            trainer.Resume(Path.Combine(folder, Trainer.CheckpointFileName));
            var observer = new RecordingObserver();
            trainer.Run(observer);
            Assert.That(observer.Steps.Select(s => s.Loss), Is.EqualTo(losses.Skip(5)), "the resumed steps' losses");
            Assert.That(trainer.Arena.Values.Span.ToArray(), Is.EqualTo(values), "backbone, head layers and classifier, bit for bit");
            Assert.That(trainer.Arena.OptimizerState.Span.ToArray(), Is.EqualTo(state), "the SGD momentum, bit for bit");
        }

        // Another labelled subset is another recipe.
        using (var run = Run(folder))
        {
            run.Options = run.Options with { LabelsSeed = 1 };
            using var trainer = run.CreateTrainer(FineTune(pretrained, layers: 1));
            var e = Assert.Throws<CheckpointException>(() => trainer.Resume(Path.Combine(folder, Trainer.CheckpointFileName)));
            Assert.That(e!.Message, Does.Contain("labels_seed 1 here, 0 in the checkpoint"));
        }
    }

    [Test]
    public void DistillationMovesTheStudentTowardsAFrozenTeacher()
    {
        // A random network stands in for the fine-tuned teacher: what matters is that it is frozen and run in eval mode.
        using var backend = new CpuBackend();
        var layout = new ArenaLayout();
        var teacherBackbone = new ResNet(layout, TinyRun.Backbone, "backbone");
        var teacherClassifier = LinearHead.Classifier(layout, teacherBackbone.FeatureDim, 10, "classifier");
        using var teacher = new Sequential(teacherBackbone, teacherClassifier);
        using var teacherArena = new ParameterArena(backend, layout, optimizerStateSlots: 0);
        teacher.Bind(teacherArena);
        teacher.Initialize(9);
        backend.Scale(teacherClassifier.Linear.Weight, 20f, teacherClassifier.Linear.Weight);  // confident predictions
        var before = teacherArena.Values.Span.ToArray();

        using var run = new Assembly(new Distillation(new DistillationOptions { Classes = 10, Temperature = 2f, Augmentations = "supervised-cifar" }, teacher), backend);
        int[] labels = [0, 1, 2, 3, 4, 5, 6, 7];
        var steps = Enumerable.Range(0, 12).Select(step => run.Step(labels, step)).ToList();
        Assert.That(steps[^1].Loss, Is.LessThan(steps[0].Loss - 0.1f), $"losses {string.Join(", ", steps.Select(s => s.Loss))}");
        Assert.That(steps[^1].Top1Accuracy, Is.GreaterThan(steps[0].Top1Accuracy), "the student agrees with the teacher more often");
        Assert.That(teacherArena.Values.Span.ToArray(), Is.EqualTo(before), "the teacher is frozen, BatchNorm statistics included");
    }

    [Test]
    public void TheLabelTermAddsTheCrossEntropyOfTheBatchsLabelledImages()
    {
        using var backend = new CpuBackend();
        var layout = new ArenaLayout();
        var teacherBackbone = new ResNet(layout, TinyRun.Backbone, "backbone");
        using var teacher = new Sequential(teacherBackbone, LinearHead.Classifier(layout, teacherBackbone.FeatureDim, 10, "classifier"));
        using var teacherArena = new ParameterArena(backend, layout, optimizerStateSlots: 0);
        teacher.Bind(teacherArena);
        teacher.Initialize(9);
        // The batch is images 100..107 of a set labelled i % 10; the subset holds some of them.
        using var source = BuiltinShapes.Create(120, 8);
        var subset = LabelledSubset.Draw(source, LabelBudget.Parse("6"), seed: 2);
        var labelled = Enumerable.Range(0, Assembly.Batch).Where(i => subset.Contains(100 + i)).ToArray();
        Assert.That(labelled, Is.Not.Empty.And.Length.LessThan(Assembly.Batch), "a batch with labelled and unlabelled images");
        const float temperature = 2f, weight = 0.5f;
        var distillation = new Distillation(new DistillationOptions { Classes = 10, Temperature = temperature, LabelWeight = weight, Augmentations = "supervised-cifar" }, teacher, subset);
        using var run = new Assembly(distillation, backend);
        var stats = ContrastiveStats.Read(backend, distillation.TrainingStep(new ViewGroups([run.Views], [1], Assembly.Batch, 0, Enumerable.Range(100, 8).ToArray(), Enumerable.Range(0, 8).ToArray())));

        // The same logits again: the teacher in eval mode, the student in training mode (batch statistics).
        var shape = run.Views.Shape;
        using var teacherPlan = teacher.Plan(shape);
        var t = Array.ConvertAll(Numerics.ToArray(backend, teacherPlan.Forward(run.Views, training: false)), v => (double)v);
        var student = new Sequential(run.Backbone, distillation.Classifier!);
        student.Bind(run.Arena);
        using var studentPlan = student.Plan(shape);
        var s = Array.ConvertAll(Numerics.ToArray(backend, studentPlan.Forward(run.Views, training: true)), v => (double)v);
        var soft = DistillationLossTests.Reference(s, DistillationLossTests.Softmax(t, 8, 10, temperature), 8, 10, temperature);
        var crossEntropy = labelled.Average(i =>
        {
            var row = s.AsSpan(i * 10, 10).ToArray();
            var max = row.Max();
            return max + Math.Log(row.Sum(v => Math.Exp(v - max))) - row[i];
        });
        Assert.That(stats.Loss, Is.EqualTo(soft + (weight * crossEntropy)).Within(1e-5 * (soft + crossEntropy)));
        Assert.That(Numerics.ToArray(backend, distillation.Loss.Loss)[0], Is.EqualTo(soft).Within(1e-5 * soft), "the soft term alone");
    }

    /// <summary>Trains simclr-v2 for an epoch on the tiny run into <paramref name="folder"/> and reads it back to fine-tune.</summary>
    private static PretrainedRun Pretrain(string folder)
    {
        using var run = new TinyRun(folder, epochs: 1);
        using var trainer = run.CreateTrainer(MethodCatalog.Create("simclr-v2", smallImages: true));
        trainer.Run();
        return PretrainedRun.Read(folder);
    }

    private static Supervised FineTune(PretrainedRun pretrained, int layers) => new(new SupervisedOptions
    {
        Classes = 10,
        Head = pretrained.HeadLayers(layers),
        Pretrained = pretrained.Path,
        Augmentations = "supervised-cifar",
    });
}
