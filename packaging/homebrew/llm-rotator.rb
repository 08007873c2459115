# Homebrew cask for LLM Rotator (template). packaging/macos/build-app.sh writes a copy
# with the version, the zip's sha256, its URL (RELEASE_URL) and the homepage (HOMEPAGE,
# optional) filled in to target/macos/llm-rotator.rb; put that copy in your tap, or
# install it directly with
#   brew install --cask ./target/macos/llm-rotator.rb
cask "llm-rotator" do
  version "@VERSION@"
  sha256 "@SHA256@"

  url "@URL@"
  name "LLM Rotator"
  desc "Menu-bar agent keeping one OpenAI-compatible endpoint alive across LLM providers"
  homepage "@HOMEPAGE@"

  depends_on macos: ">= :monterey"

  app "LLM Rotator.app"
  binary "#{appdir}/LLM Rotator.app/Contents/MacOS/llm-rotator"

  uninstall launchctl: "com.llmrotator.agent",
            quit:      "com.llmrotator.agent"

  zap trash: [
    "~/Library/Application Support/llm-rotator",
    "~/Library/LaunchAgents/com.llmrotator.agent.plist",
    "~/Library/Logs/llm-rotator",
  ]

  caveats <<~EOS
    Start LLM Rotator at login (and now) with:
      llm-rotator service install
    API keys stay in your login keychain after `brew uninstall --zap`; see the README.
  EOS
end
