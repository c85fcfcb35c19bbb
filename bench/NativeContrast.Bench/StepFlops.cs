namespace NativeContrast.Bench;

using NativeContrast.Nn;

/// <summary>The FLOPs of one training step of a ResNet (the first stage of a sequential plan) and its head.</summary>
public static class StepFlops
{
    /// <summary>
    /// Each convolution and linear layer does 2·MACs forward and twice that backward (input and weight gradients;
    /// the stem skips its input gradient). Normalisation and pooling are bandwidth, not FLOPs.
    /// <paramref name="headMacsPerSample"/> covers the layers after the encoder (a classifier or projector).
    /// </summary>
    public static double Of(ResNet encoder, Plan plan, int batch, double headMacsPerSample)
    {
        var resnet = (ResNetPlan)((SequentialPlan)plan.Root).Stages[0];
        static double Macs(ConvPlan p, Conv2d conv) => (double)p.Geometry.Batch * p.Geometry.OutPositions * p.Geometry.Columns * conv.OutChannels;
        var stem = Macs(resnet.Conv1, encoder.Conv1);
        var body = 0.0;
        for (var i = 0; i < encoder.Blocks.Count; i++)
        {
            var block = encoder.Blocks[i];
            var blockPlan = resnet.Blocks[i];
            for (var j = 0; j < block.Convs.Count; j++)
            {
                body += Macs(blockPlan.Convs[j], block.Convs[j]);
            }
            if (block.DownsampleConv is { } downsample)
            {
                body += Macs(blockPlan.DownsampleConv!, downsample);
            }
        }
        body += batch * headMacsPerSample;
        return (2 * stem * 2) + (2 * body * 3);
    }
}
