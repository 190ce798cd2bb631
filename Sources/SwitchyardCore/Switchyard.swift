/// Facts about this build of Switchyard.
public enum Switchyard {
    /// The release version, printed by `switchyard --version` and published in worker heartbeats.
    public static let version = "0.1.0"
}
